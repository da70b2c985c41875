"""LAppS's ``.lar`` archive (ITpC/lar), little-endian:

- a 48-byte header: ``LAR``, version 1, the TOC's size and compressed
  size, the number of files, and SHA-256 over every file's SHA-256 in TOC
  order;
- the bzip2-compressed TOC: per file a 56-byte part (size, compressed
  size, path length, permission bits, SHA-256) and its relative path;
- each file's bzip2 stream, in TOC order.

The original trusted all of it. Here nothing is written before the header,
the TOC and every path have been checked, a file is decompressed no
further than the size its entry declares, and an archive that fails any
check leaves nothing behind (:func:`unpack` removes what it wrote).
"""

import bz2
import dataclasses
import hashlib
import os
import stat
import struct

MAGIC, VERSION = b"LAR", 1
HEADER = struct.Struct("<3sBIII32s")
ENTRY = struct.Struct("<QQII32s")
#: The longest path an entry may hold (Linux's PATH_MAX), the longest name
#: in it (NAME_MAX, in bytes) and the most folders deep a file may be.
MAX_PATH, MAX_NAME, MAX_DEPTH = 4096, 255, 32
_CHUNK = 1 << 16


class LarError(ValueError):
    """The archive is refused; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What an archive may hold (``server.deploy``)."""

    max_archive_bytes: int = 64 << 20
    max_unpacked_bytes: int = 256 << 20
    max_files: int = 10_000


@dataclasses.dataclass(frozen=True)
class Entry:
    path: str
    size: int
    compressed_size: int
    mode: int       # permission bits
    sha256: bytes


@dataclasses.dataclass(frozen=True)
class Archive:
    """A read archive's table of contents, every check but the files' own passed."""

    entries: tuple
    digest: bytes       # the header's digest of digests
    file_sha256: str    # SHA-256 of the whole archive file (what ``sha256sum`` prints)
    top: str            # the one top-level folder
    data_offset: int

    @property
    def unpacked_bytes(self):
        return sum(e.size for e in self.entries)


def _check_path(path_bytes):
    try:
        path = path_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise LarError(f"a path is not UTF-8: {path_bytes[:80]!r}") from None
    shown = ascii(path[:200])
    if path.startswith("/"):
        raise LarError(f"absolute path {shown}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise LarError(f"path {shown} holds an empty, '.' or '..' component")
    if any(c in path for c in "\0\\") or not path.isprintable():
        raise LarError(f"path {shown} holds a control character or a backslash")
    if len(parts) < 2:
        raise LarError(f"file {shown} is not inside the archive's top-level folder")
    if len(parts) > MAX_DEPTH + 1:
        raise LarError(f"path {shown} is more than {MAX_DEPTH} folders deep")
    if any(len(p.encode("utf-8")) > MAX_NAME for p in parts):
        raise LarError(f"path {shown} holds a name longer than {MAX_NAME} bytes")
    return path


def _toc(data, items):
    """The entries of an uncompressed TOC, each path checked."""
    entries, at = [], 0
    for _ in range(items):
        if at + ENTRY.size > len(data):
            raise LarError("the table of contents ends inside an entry")
        size, compressed, path_size, mode, digest = ENTRY.unpack_from(data, at)
        at += ENTRY.size
        if path_size > MAX_PATH or at + path_size > len(data):
            raise LarError(f"an entry's path length {path_size} is too long for the TOC")
        path = _check_path(data[at:at + path_size])
        at += path_size
        if mode & ~0o7777:
            kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
            raise LarError(f"{ascii(path)} is {kind} (mode {mode:o}); only regular files "
                           "are deployed")
        entries.append(Entry(path, size, compressed, mode, digest))
    if at != len(data):
        raise LarError(f"the table of contents has {len(data) - at} bytes after its "
                       f"{items} entries")
    return entries


def _check_tree(entries, most_folders):
    """One top-level folder; no path given twice or both as a file and a
    folder; no more folders than ``most_folders``."""
    tops = sorted({e.path.split("/", 1)[0] for e in entries})
    if len(tops) != 1:
        raise LarError(f"the archive must hold exactly one top-level folder, it holds "
                       f"{len(tops)}: {', '.join(map(ascii, tops[:5]))}")
    files = set()
    for e in entries:
        if e.path in files:
            raise LarError(f"{ascii(e.path)} is in the archive twice")
        files.add(e.path)
    folders = {"/".join(e.path.split("/")[:n]) for e in entries
               for n in range(1, e.path.count("/") + 1)}
    if len(folders) > most_folders:
        raise LarError(f"{len(folders)} folders: more than deploy.max_files ({most_folders})")
    for folder in folders & files:
        raise LarError(f"{ascii(folder)} is both a file and a folder")
    return tops[0]


def _decompress(data, limit, what):
    """bzip2 ``data`` into at most ``limit`` bytes: a bomb stops at the limit."""
    decompressor = bz2.BZ2Decompressor()
    try:
        out = decompressor.decompress(data, max_length=limit + 1)
    except (OSError, EOFError, ValueError) as e:
        raise LarError(f"{what}: not bzip2 data ({e})") from None
    if len(out) > limit:
        raise LarError(f"{what}: decompresses past its declared {limit} bytes")
    if not decompressor.eof or decompressor.unused_data:
        raise LarError(f"{what}: the bzip2 stream is truncated or followed by other data")
    return out


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read(path, limits=Limits()):
    """Check an archive's header, TOC, paths and sizes (not yet the files'
    digests: :func:`unpack` does that as it decompresses)."""
    size = os.stat(path).st_size
    if size > limits.max_archive_bytes:
        raise LarError(f"{size} bytes: larger than deploy.max_archive_bytes "
                       f"({limits.max_archive_bytes})")
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            raise LarError(f"{size} bytes: too short for a .lar header")
        magic, version, toc_size, toc_compressed, items, digest = HEADER.unpack(head)
        if magic != MAGIC:
            raise LarError(f"not a .lar archive (magic {magic!r}, expected b'LAR')")
        if version != VERSION:
            raise LarError(f"version {version}: only .lar version 1 is known")
        if items == 0:
            raise LarError("the archive holds no file")
        if items > limits.max_files:
            raise LarError(f"{items} files: more than deploy.max_files ({limits.max_files})")
        if toc_size > items * (ENTRY.size + MAX_PATH):
            raise LarError(f"a TOC of {toc_size} bytes for {items} files")
        if HEADER.size + toc_compressed > size:
            raise LarError(f"the header declares a {toc_compressed}-byte TOC; the file "
                           "ends before it")
        entries = _toc(_decompress(f.read(toc_compressed), toc_size, "the TOC"), items)
    if hashlib.sha256(b"".join(e.sha256 for e in entries)).digest() != digest:
        raise LarError("the header's digest does not match the files' digests (corrupt archive)")
    data_offset = HEADER.size + toc_compressed
    declared = data_offset + sum(e.compressed_size for e in entries)
    if declared != size:
        raise LarError(f"the TOC accounts for {declared} bytes, the file has {size}")
    unpacked = sum(e.size for e in entries)
    if unpacked > limits.max_unpacked_bytes:
        raise LarError(f"{unpacked} bytes unpacked: more than deploy.max_unpacked_bytes "
                       f"({limits.max_unpacked_bytes})")
    top = _check_tree(entries, limits.max_files)
    return Archive(tuple(entries), digest, file_sha256(path), top, data_offset)


def _write_new(path, data, mode):
    """Create ``path`` (never through a symlink, never over a file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, (mode & 0o755) | 0o600)  # no setuid, setgid, sticky bit or write for others


def unpack(path, archive, destination):
    """Decompress every file of a :func:`read` archive under ``destination``
    (a new, empty folder), checking each against its size and SHA-256."""
    with open(path, "rb") as f:
        f.seek(archive.data_offset)
        for e in archive.entries:
            data = _decompress(f.read(e.compressed_size), e.size, ascii(e.path))
            if len(data) != e.size:
                raise LarError(f"{ascii(e.path)}: {len(data)} bytes, the TOC says {e.size}")
            if hashlib.sha256(data).digest() != e.sha256:
                raise LarError(f"{ascii(e.path)}: SHA-256 mismatch (corrupt archive)")
            target = os.path.join(destination, *e.path.split("/"))
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            _write_new(target, data, e.mode)


def _files(directory, output):
    """Every regular file under ``directory`` but ``output``, as archive
    paths under the folder's own name."""
    top, skip = os.path.basename(os.path.abspath(directory)), os.path.abspath(output)
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full) and os.path.abspath(full) != skip:
                yield full, top + "/" + os.path.relpath(full, directory).replace(os.sep, "/")


def pack(directory, output):
    """Write ``directory`` (its regular files, under its own name) as a
    .lar at ``output``, in the layout LAppS's ``lar e`` unpacks."""
    toc, streams, digests = [], [], []
    for full, name in _files(directory, output):
        with open(full, "rb") as f:
            data = f.read()
        compressed = bz2.compress(data)
        digest = hashlib.sha256(data).digest()
        encoded = name.encode("utf-8")
        toc.append(ENTRY.pack(len(data), len(compressed), len(encoded),
                              stat.S_IMODE(os.stat(full).st_mode), digest) + encoded)
        streams.append(compressed)
        digests.append(digest)
    if not toc:
        raise LarError(f"{directory}: no file to pack")
    toc_data = b"".join(toc)
    toc_compressed = bz2.compress(toc_data)
    with open(output, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, len(toc_data), len(toc_compressed), len(toc),
                            hashlib.sha256(b"".join(digests)).digest()))
        f.write(toc_compressed)
        for stream in streams:
            f.write(stream)
    return len(toc)
