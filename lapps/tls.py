"""TLS for the listener: certificate checks at config time, and the server
context built through Twisted's ``CertificateOptions`` (pyOpenSSL)."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

#: ``tls_server_version`` / ``tls_client_version`` → the lowest version allowed.
MINIMUM_VERSION = {3: TLSVersion.TLSv1_2, 4: TLSVersion.TLSv1_3}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def load_chain(path):
    """The certificates in a PEM file, leaf first (a bundle may follow it)."""
    return x509.load_pem_x509_certificates(_read(path))


def load_key(path):
    return serialization.load_pem_private_key(_read(path), password=None)


def _public_bytes(key):
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def check_pair(cert_path, key_path):
    """Problems with a certificate/key pair, as (config key, message) pairs."""
    problems = []
    chain = key = None
    try:
        chain = load_chain(cert_path)
    except FileNotFoundError:
        problems.append(("cert", f"no such file: {cert_path}"))
    except (OSError, ValueError) as e:
        problems.append(("cert", f"not a PEM certificate file: {cert_path} ({e})"))
    try:
        key = load_key(key_path)
    except FileNotFoundError:
        problems.append(("key", f"no such file: {key_path}"))
    except (OSError, ValueError, TypeError) as e:
        problems.append(("key", f"not an unencrypted PEM private key: {key_path} ({e})"))
    if chain and key and _public_bytes(chain[0].public_key()) != _public_bytes(key.public_key()):
        problems.append(("key", f"{key_path} does not match the certificate in {cert_path}"))
    return problems


def server_options(cert_path, key_path, version):
    """Context factory for the listener: the certificate, its chain, the
    minimum TLS version, and renegotiation refused."""
    chain = load_chain(cert_path)
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(load_key(key_path)),
        certificate=crypto.X509.from_cryptography(chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]],
        raiseMinimumTo=MINIMUM_VERSION[version],
    )
    options.getContext().set_options(SSL.OP_NO_RENEGOTIATION)
    return options
