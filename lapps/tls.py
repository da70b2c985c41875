"""TLS for the listener: certificate checks at config time, and the server
context built through Twisted's ``CertificateOptions`` (pyOpenSSL), behind
a connection creator whose options a reload replaces (new certificate for
new connections, nothing dropped)."""

import os
import ssl
import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (Certificate, CertificateOptions, TLSVersion,
                                  optionsForClientTLS, platformTrust, trustRootFromCertificates)
from zope.interface import implementer

#: ``tls_server_version`` / ``tls_client_version`` → the lowest version allowed.
MINIMUM_VERSION = {3: TLSVersion.TLSv1_2, 4: TLSVersion.TLSv1_3}
#: The same, for the standard library's ``ssl``.
STDLIB_MINIMUM_VERSION = {3: ssl.TLSVersion.TLSv1_2, 4: ssl.TLSVersion.TLSv1_3}


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
    ciphers = SSL.Connection(options.getContext()).get_cipher_list()
    options.stdlib_context = server_context(cert_path, key_path, version, ciphers)
    return options


def server_context(cert_path, key_path, version, ciphers):
    """The same TLS settings as an ``ssl.SSLContext``, for the fast path's
    :mod:`lapps.fast.stdtls`: certificate chain and key, minimum
    version, renegotiation refused, the ``ciphers`` pyOpenSSL's options
    allow (TLS 1.2; TLS 1.3's suites are OpenSSL's defaults in both), and
    no session tickets (Twisted's options ask for none and turn the session
    cache off, yet its TLS 1.3 still sends them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = STDLIB_MINIMUM_VERSION[version]
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    context.num_tickets = 0
    context.set_ciphers(":".join(ciphers))
    context.load_cert_chain(cert_path, key_path)
    return context


def fingerprint(options):
    """The SHA-256 fingerprint of the certificate ``options`` serve."""
    return options.certificate.digest("sha256").decode()


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The listener's TLS: each new connection is made by the current
    ``options`` (from :func:`server_options`), or its ``context`` (the
    stdlib twin, for the fast path), which a reload replaces; connections
    already made keep the certificate they got."""

    def __init__(self, options):
        self.options = options

    def serverConnectionForTLS(self, protocol):
        return self.options.serverConnectionForTLS(protocol)

    @property
    def context(self):
        """The current options' ``ssl.SSLContext`` (:func:`server_context`)."""
        return self.options.stdlib_context


class ClientTLS:
    """The TLS of outbound ``wss://`` (``cws``), built once per server.

    With ``verify`` the server's certificate must chain to ``ca_file`` (if it
    exists) or to the system trust store, and name the host; without,
    nothing is verified, as in LAppS. :attr:`context` is the stdlib
    ``SSLContext`` of :mod:`lapps.fast.stdtls` (``fast_path``; the
    name is checked by ``ssl``); :meth:`creator` gives Twisted's TLS a
    connection creator per host (service-identity checks the name), one
    OpenSSL context for every connection to that host.
    """

    def __init__(self, ca_file, version, verify=True):
        self.ca_file, self.version, self.verify = ca_file, version, verify
        self._context = self._trust = None
        self._creators = {}

    @property
    def context(self):
        if self._context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = STDLIB_MINIMUM_VERSION[self.version]
            if self.verify:
                context.load_default_certs()
                if self.ca_file and os.path.isfile(self.ca_file):
                    context.load_verify_locations(self.ca_file)
            else:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            self._context = context
        return self._context

    def creator(self, host):
        if host not in self._creators:
            minimum = MINIMUM_VERSION[self.version]
            if not self.verify:
                self._creators[host] = CertificateOptions(verify=False, raiseMinimumTo=minimum)
            else:
                if self._trust is None:
                    self._trust = _trust_root(self.ca_file)
                self._creators[host] = optionsForClientTLS(
                    host, trustRoot=self._trust,
                    extraCertificateOptions={"raiseMinimumTo": minimum})
        return self._creators[host]


def _trust_root(ca_file):
    """The configured CA file plus the system trust store, as one trust root."""
    bundles = [p for p in (ca_file, ssl.get_default_verify_paths().cafile)
               if p and os.path.isfile(p)]
    with warnings.catch_warnings():
        # System stores still carry old roots with a serial number of 0, which
        # OpenSSL takes and cryptography warns about on every start.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        certificates = [Certificate(crypto.X509.from_cryptography(c))
                        for path in bundles for c in load_chain(path)]
    return trustRootFromCertificates(certificates) if certificates else platformTrust()
