"""Origins as the Origin header and an allow-list name them (RFC 6454):
``scheme://host:port`` with scheme and host lower-cased and the default
port written out, so that ``https://Example.com`` and
``https://example.com:443`` are one origin."""

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise(text: str) -> str:
    """The canonical form of an origin; ``"null"`` stays ``"null"``.
    Raises ValueError for anything that is not a bare origin."""
    if text == "null":
        return text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an origin: {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username \
            or parts.password:
        raise ValueError(f"an origin has no path, query, fragment or user: {text!r}")
    port = parts.port or _DEFAULT_PORTS[scheme]  # ValueError for a bad port
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
