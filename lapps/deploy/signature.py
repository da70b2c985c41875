"""Detached Ed25519 signatures of ``.lar`` archives (``NAME.lar.sig``).

The signed message is a fixed label and the archive's SHA-256, so a
signature made for an archive says nothing about any other file. Keys are
written as base64 of their 32 raw bytes (``deploy.trusted_keys``); a
private key is a PKCS#8 PEM file (``lapps lar keygen``).
"""

import base64
import binascii
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lapps.deploy.lar import file_sha256

LABEL = b"lapps .lar signature v1\0"
SUFFIX = ".sig"


def _message(archive_sha256_hex):
    return LABEL + bytes.fromhex(archive_sha256_hex)


def public_key(text):
    """A trusted key from its base64 text; ValueError if it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValueError("not an Ed25519 public key (base64 of 32 bytes)") from None


def is_public_key(text):
    try:
        public_key(text)
        return True
    except ValueError:
        return False


def generate(private_path):
    """Write a new private key (PEM, mode 0600); return its public key text."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return _public_text(key.public_key())


def _public_text(key):
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign(archive_path, private_path):
    """Sign an archive; return the signature file's text."""
    with open(private_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_path}: not an Ed25519 private key")
    signature = key.sign(_message(file_sha256(archive_path)))
    return base64.b64encode(signature).decode("ascii") + "\n"


def check(signature_text, archive_sha256_hex, trusted):
    """Whether the signature is one of the ``trusted`` keys' (base64 texts)."""
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    for text in trusted:
        try:
            public_key(text).verify(signature, _message(archive_sha256_hex))
            return True
        except InvalidSignature:
            continue
    return False
