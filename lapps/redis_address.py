"""The Redis address of the bus, from ``bus.url``.

Only the plain ``redis://`` form is taken: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``
(port 6379 and database 0 by default; an IPv6 host in brackets). A query
string, a fragment or TLS (``rediss://``) are refused rather than ignored, so
a URL never means more than lapps does with it.
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"  # never the password


def parse(url: str) -> RedisAddress:
    """The address in ``url``; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError('the scheme must be "redis"')
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError("a query string or fragment is not supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("the host is missing")
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    path = parts.path.lstrip("/")
    if not (path == "" or path.isdigit() and path.isascii() and "/" not in parts.path[1:]):
        raise ValueError("the path must be a database number, e.g. /0")
    return RedisAddress(host=parts.hostname, port=port or 6379, db=int(path or 0),
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password is not None else None)
