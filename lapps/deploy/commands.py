"""``lapps lar``: make, inspect, check and sign ``.lar`` archives without
LAppS's C++ ``lar`` tool (what ``pack`` writes, ``lar e`` unpacks)."""

import os
import tempfile

from lapps.deploy import lar, signature


def pack(directory, output=None):
    output = output or os.path.basename(os.path.abspath(directory)) + ".lar"
    count = lar.pack(directory, output)
    print(f"wrote {output}: {count} files, sha256 {lar.file_sha256(output)}")
    return 0


def list_files(path):
    archive = lar.read(path)  # within the default deploy limits
    for e in archive.entries:
        print(f"{e.mode:04o} {e.size:>12} {e.path}")
    print(f"{len(archive.entries)} files, {archive.unpacked_bytes} bytes, "
          f"sha256 {archive.file_sha256}")
    return 0


def verify(path):
    """Every check a deploy makes of the archive itself, the files' digests
    included (unpacked into a folder that is then removed)."""
    archive = lar.read(path)  # within the default deploy limits
    with tempfile.TemporaryDirectory() as scratch:
        lar.unpack(path, archive, scratch)
    print(f"{path}: ok, {len(archive.entries)} files in {archive.top}/, "
          f"sha256 {archive.file_sha256}")
    return 0


def sign(path, key):
    text = signature.sign(path, key)
    with open(path + signature.SUFFIX, "w") as f:
        f.write(text)
    print(f"wrote {path + signature.SUFFIX}")
    return 0


def keygen(private_path):
    public = signature.generate(private_path)
    print(f"wrote {private_path} (keep it secret); its public key, for deploy.trusted_keys:")
    print(public)
    return 0
