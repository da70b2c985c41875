"""Certificates made at test time: a CA and the localhost server certificate
it signs, written as PEM files, and a client context that trusts that CA
alone. For every test module that serves or reaches wss (TLS, access log,
ACLs, limits, backpressure, fast path, cws, reloads, metrics, conformance)."""

import os
import ssl
from pathlib import Path

from lapps import devcert


def write_pem(path, *parts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(parts))
    return path


class PKI:
    """A CA and a localhost/127.0.0.1/::1 server certificate it signs, as
    files under ``directory`` (``ssl/ca.pem``, ``ssl/cert.pem``, ``ssl/key.pem``)."""

    def __init__(self, directory, name="ssl"):
        self.ca_cert, self.ca_key = devcert.make_ca()
        self.cert, self.key = devcert.make_server_cert(self.ca_cert, self.ca_key)
        self.dir = Path(directory) / name
        self.ca = write_pem(self.dir / "ca.pem", devcert.pem_cert(self.ca_cert))
        self.cert_file = write_pem(self.dir / "cert.pem", devcert.pem_cert(self.cert))
        self.key_file = write_pem(self.dir / "key.pem", devcert.pem_key(self.key))

    def server(self, version=3, relative_to=None, **extra):
        """The ``server`` config keys serving this certificate; paths are made
        relative to ``relative_to`` (the config's folder) when given."""
        def where(p):
            return os.path.relpath(p, relative_to) if relative_to else str(p)
        return {"tls": True, "tls_server_version": version,
                "tls_certificates": {"ca": where(self.ca), "cert": where(self.cert_file),
                                     "key": where(self.key_file)}, **extra}


def trusting(cafile, maximum=None, minimum=None):
    """A client context that trusts ``cafile`` alone and checks hostnames."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    if maximum is not None:
        ctx.maximum_version = maximum
    if minimum is not None:
        ctx.minimum_version = minimum
    return ctx
