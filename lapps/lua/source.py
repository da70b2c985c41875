"""The Lua source lapps runs, shipped as package data: ``.lua`` files next to
the Python modules that load them (once, at import)."""

from importlib.resources import files


def read(name: str, package: str = "lapps.lua") -> bytes:
    """The bytes of the file ``name`` in ``package`` (``lapps.lua`` unless told)."""
    return files(package).joinpath(name).read_bytes()
