"""The one error a bus raises at start, in a module of its own so that the
backends below ``lapps.bus`` raise it without importing their package."""


class BusUnavailable(Exception):
    """Redis cannot be reached (the message names it and says why)."""
