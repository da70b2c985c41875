"""Lua call times per service, kept as plain integers on the per-message
path and folded into a prometheus_client ``Histogram`` at a scrape.

``Histogram.observe`` takes a lock and walks the bucket bounds (about a
microsecond); :meth:`Latency.add` is an index and two additions. The class
of a time of ``ns`` nanoseconds is its power of two, ``(ns - 1).bit_length()``
(the ``k`` with 2**(k-1) < ns <= 2**k), so the histogram's bounds are powers
of two as well: 2**10 ns (about 1 µs) to 2**32 ns (about 4.3 s), one every
second power (×4). Each class then falls in exactly one bucket.
"""

#: The powers of two (of nanoseconds) that bound the histogram's buckets.
EXPONENTS = tuple(range(10, 33, 2))
#: The buckets' upper bounds in seconds, for the ``Histogram``.
BOUNDS = tuple(2 ** k / 1e9 for k in EXPONENTS) + (float("inf"),)

_CLASSES = 65  # (ns - 1).bit_length() for any ns < 2**64
#: The bucket (index into BOUNDS) of each power-of-two class.
_BUCKET_OF = [next((i for i, e in enumerate(EXPONENTS) if k <= e), len(EXPONENTS))
              for k in range(_CLASSES)]


class Latency:
    """The counts of one service's Lua call times since the last fold.
    Written and folded on the reactor thread only."""

    __slots__ = ("counts", "total_ns")

    def __init__(self):
        self.counts = [0] * _CLASSES
        self.total_ns = 0

    def add(self, ns):
        self.counts[(ns - 1).bit_length()] += 1
        self.total_ns += ns


def fold(latency, histogram):
    """Move what ``latency`` counted into ``histogram`` (a labelled child of
    a ``Histogram`` made with :data:`BOUNDS`), and start it over.

    prometheus_client has no public call that adds counts in bulk, so this
    uses its internals, here only: a child keeps one value per bucket
    (``_buckets``, not cumulative: ``observe`` increments the first bucket
    whose bound is >= the amount) and the sum (``_sum``); both have ``inc``,
    which in multiprocess mode writes the process's file."""
    counts, latency.counts = latency.counts, [0] * _CLASSES
    total, latency.total_ns = latency.total_ns, 0
    buckets = histogram._buckets
    for k, n in enumerate(counts):
        if n:
            buckets[_BUCKET_OF[k]].inc(n)
    if total:
        histogram._sum.inc(total / 1e9)
