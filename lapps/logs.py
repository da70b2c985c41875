"""Log observers for ``twistd --logger``. Every lapps event carries a stable
``lapps_event`` name (``listener.up``, ``connection.close``, ``lua.error``, ...)
and its facts as fields; ``twistd -n --logger lapps.logs.json_lines lapps ...``
writes one JSON object per event per line, for log shippers and tests."""

import sys

from twisted.logger import jsonFileLogObserver


def json_lines():
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
