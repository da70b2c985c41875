"""``murmur``: LAppS's string hash, which is libstdc++'s ``std::hash`` (the
64-bit ``_Hash_bytes``, a MurmurHash2 variant with seed 0xc70f6907), so keys
hashed here match those of the original; numbers hash to themselves."""

from lapps.lua import source

_MASK = (1 << 64) - 1
_MUL = (0xC6A4A793 << 32) + 0x5BD1E995
_SEED = 0xC70F6907

_MURMUR = source.read("murmur.lua")


def _shift_mix(v):
    return v ^ (v >> 47)


def hash_bytes(data: bytes) -> int:
    """libstdc++'s 64-bit ``_Hash_bytes(data, len, 0xc70f6907)``."""
    length = len(data)
    h = (_SEED ^ (length * _MUL)) & _MASK
    whole = length & ~7
    for i in range(0, whole, 8):
        chunk = int.from_bytes(data[i:i + 8], "little")
        chunk = (_shift_mix((chunk * _MUL) & _MASK) * _MUL) & _MASK
        h = ((h ^ chunk) * _MUL) & _MASK
    if length & 7:
        h = ((h ^ int.from_bytes(data[whole:], "little")) * _MUL) & _MASK
    h = (_shift_mix(h) * _MUL) & _MASK
    return _shift_mix(h)


def hex_digest(value) -> bytes:
    """16 lower-case hex digits: the string hash, or the truncated number."""
    number = hash_bytes(value) if isinstance(value, bytes) else int(value) & _MASK
    return b"%016x" % number


def install(context):
    context.runtime.globals()[b"murmur"] = context.runtime.execute(_MURMUR, hex_digest)
