"""Whether a value copied in from Python fits in a runtime's memory cap.

LuaJIT aborts the whole process when it cannot allocate the arguments of a
call from Python, so a value built from outside (an mqr message, held
bcast messages) is measured against the cap first.
"""

#: What rebuilding a value of ``n`` CBOR bytes made of ``k`` scalars and
#: containers may take in the receiver's runtime, at its peak: ``2 n + 64 k``
#: plus a margin (measured: arrays of empty objects take ~46 bytes per item,
#: long strings about their length).
_PER_BYTE, _PER_ITEM, _MARGIN = 2, 64, 256 * 1024


def fits(runtime, size, items):
    """Whether a value of ``size`` CBOR bytes and ``items`` scalars and
    containers fits under ``runtime``'s memory cap, after a garbage
    collection if need be."""
    limit = runtime.get_max_memory()
    needed = _PER_BYTE * size + _PER_ITEM * items + _MARGIN
    if not limit or runtime.get_memory_used() + needed <= limit:
        return True
    runtime.set_max_memory(limit + needed)
    try:
        runtime.execute(b"collectgarbage()")
    finally:
        runtime.set_max_memory(limit)
    return runtime.get_memory_used() + needed <= limit
