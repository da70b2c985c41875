"""The last warnings and errors the process logged, for the status page: an
operator who opens it at 3 a.m. sees what went wrong without the log file."""

import collections
from dataclasses import dataclass

from twisted.logger import LogLevel, formatEvent

#: How many events are kept, and how much of each one's text (a Lua traceback
#: is a few hundred bytes; a runaway message must not fill the memory).
KEEP, MAX_TEXT = 50, 4000

_SHOWN = (LogLevel.warn, LogLevel.error, LogLevel.critical)


@dataclass(frozen=True)
class Recent:
    """One logged warning or error, as the status page shows it."""

    time: float        # the event's log_time (seconds since the epoch)
    level: str         # "warn", "error" or "critical"
    event: str         # its lapps_event name, or its namespace when it has none
    worker: int | None  # the worker process it came from (the supervisor re-emits theirs)
    text: str


class RecentEvents:
    """A log observer keeping the last :data:`KEEP` events at level warn or
    above. Other events cost one comparison: it sees every log event."""

    def __init__(self, keep=KEEP):
        self._events = collections.deque(maxlen=keep)

    def __call__(self, event):
        level = event.get("log_level")
        if level not in _SHOWN:
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT] + " [...]"
        self._events.append(Recent(
            time=event.get("log_time", 0.0), level=level.name,
            event=event.get("lapps_event") or event.get("log_namespace") or "",
            worker=event.get("lapps_worker"), text=text))

    def newest_first(self):
        return list(reversed(self._events))
