"""Worker log events into the supervisor's log system, so that one
``twistd --logger ...`` sees the events of every process.

A worker writes each event as a line of JSON (``jsonFileLogObserver``) on a
pipe of its own, not on stdout, where Lua's ``print`` writes. The
supervisor reads the lines here and publishes each event again, with its
original fields (``lapps_event`` names stay as they are, so readers of the
log need no second vocabulary) plus ``lapps_worker`` (the worker's index)
and ``lapps_worker_pid``; ``log_system`` names the worker in text logs."""

from twisted.logger import Logger, eventFromJSON, globalLogPublisher

log = Logger(namespace="lapps.workers")


class EventRelay:
    """Reassembles the lines of one worker's log pipe and publishes them;
    ``on_event(event)`` sees each event after it is published."""

    def __init__(self, index, pid, on_event, publisher=globalLogPublisher):
        self.index, self.pid, self.on_event, self.publisher = index, pid, on_event, publisher
        self._partial = b""

    def data_received(self, data):
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._emit(line)

    def flush(self):
        """The pipe closed: publish an unterminated last line, if any."""
        line, self._partial = self._partial, b""
        self._emit(line)

    def _emit(self, line):
        if not line.strip():
            return
        try:
            event = eventFromJSON(line.decode("utf-8"))
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            event = None
        if not isinstance(event, dict):  # raising here would close the worker's log pipe
            log.warn("unreadable log line from worker {index}: {line!r}",
                     lapps_event="worker.bad_log_line", index=self.index, line=line[:200])
            return
        level = event.get("log_level")
        event["log_system"] = (f"worker {self.index} {event.get('log_namespace', '-')}"
                               f"#{getattr(level, 'name', '-')}")
        event["lapps_worker"], event["lapps_worker_pid"] = self.index, self.pid
        self.publisher(event)
        self.on_event(event)
