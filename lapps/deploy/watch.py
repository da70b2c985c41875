"""Which archives of the deploy folder are ready: those there at start,
then each one closed after writing or moved in (inotify on Linux), or,
where inotify is missing, each one whose size and time have stayed the
same for one poll."""

import os

from twisted.internet.task import LoopingCall
from twisted.python.filepath import FilePath

try:
    from twisted.internet import inotify
except ImportError:  # not Linux
    inotify = None

SUFFIX = ".lar"


def _archives(directory):
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.endswith(SUFFIX) and os.path.isfile(os.path.join(directory, n))]


class ArchiveWatch:
    """Calls ``found(path)`` for each ready archive of ``directory``."""

    def __init__(self, directory, found, reactor, poll_interval=1.0, use_inotify=True):
        self.directory, self.found, self.reactor = directory, found, reactor
        self.poll_interval, self.use_inotify = poll_interval, use_inotify
        self._notifier = self._polling = None
        self._last = {}      # path -> (size, mtime) at the last poll
        self._reported = {}  # path -> (size, mtime) when it was last found

    @property
    def how(self):
        return "inotify" if self._notifier is not None else "poll"

    def start(self):
        for path in _archives(self.directory):
            self.found(path)
        if self.use_inotify and inotify is not None and self._start_inotify():
            return
        self._last = {p: self._stat(p) for p in _archives(self.directory)}
        self._reported = dict(self._last)
        self._polling = LoopingCall(self._poll)
        self._polling.clock = self.reactor
        self._polling.start(self.poll_interval, now=False)

    def _start_inotify(self):
        try:
            notifier = inotify.INotify(self.reactor)
            notifier.startReading()
            notifier.watch(FilePath(self.directory),
                           mask=inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO,
                           callbacks=[self._notified])
        except (OSError, inotify.INotifyError):
            return False
        self._notifier = notifier
        return True

    def _notified(self, _watch, filepath, _mask):
        path = filepath.path if isinstance(filepath.path, str) else os.fsdecode(filepath.path)
        if path.endswith(SUFFIX) and os.path.isfile(path):
            self.found(path)

    @staticmethod
    def _stat(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _poll(self):
        now = {p: self._stat(p) for p in _archives(self.directory)}
        for path, seen in now.items():
            # unchanged for one poll (no longer being written) and not found like this yet
            if seen is not None and self._last.get(path) == seen != self._reported.get(path):
                self._reported[path] = seen
                self.found(path)
        self._last = now
        self._reported = {p: s for p, s in self._reported.items() if p in now}

    def stop(self):
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
        if self._polling is not None and self._polling.running:
            self._polling.stop()
