"""The deployer: each archive the watch finds goes through these steps,
one archive at a time, and either all of them or none take effect.

1. In a thread: copy the archive into a new folder of ``directories.tmp``
   (what is checked is what is unpacked; only a regular file is read),
   check its signature when ``deploy.trusted_keys`` is set, read and unpack
   it (:mod:`lapps.deploy.lar`), and validate its descriptor on its own and
   merged with the running config.
2. ``lapps check`` of the new service alone, in a child process that a
   stop or ``deploy.check_timeout`` kills (a module that hangs at load holds
   up no client).
3. In the reactor: move the service folder into the applications folder
   (the old version aside), write the state file, and apply the new config
   as a reload does: a new service starts, a running one gets its new
   version (its clients get 1012), the rest goes on. Whatever fails here is
   undone: the old folder and state come back.
4. The archive is removed; or, on any refusal, kept as ``NAME.lar.failed``
   beside ``NAME.lar.log`` (the reasons). An archive rewritten while it was
   being deployed is left in place and deployed again.
"""

import dataclasses
import json
import os
import shutil
import stat
import tempfile
from datetime import datetime, timezone

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import CancelledError, DeferredLock, inlineCallbacks
from twisted.logger import Logger

from lapps import config as configuration, config_json
from lapps.child_check import check_in_child
from lapps.deploy import lar, signature, state
from lapps.deploy.watch import ArchiveWatch

log = Logger(namespace="lapps.deploy")

#: The largest signature file and descriptor read.
MAX_SIGNATURE_BYTES, MAX_DESCRIPTOR_BYTES = 1024, 1 << 20
#: The prefix of each archive's folder in directories.tmp.
JOB_PREFIX = "deploy-"


class Refused(Exception):
    """An archive that is not deployed; ``lines`` say why."""

    def __init__(self, lines):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """An archive unpacked and checked, ready to be moved in."""

    job: str         # its folder under directories.tmp
    name: str        # the service
    staged: str      # the service folder, unpacked
    deployed: dict   # the deploy state with it
    check: str       # the config of ``lapps check`` for the service alone


def shown(name):
    """A file name as a log line may hold it (no line break, no control character)."""
    return name if name.isprintable() else ascii(name)


def limits(deploy_settings):
    return lar.Limits(**{f.name: deploy_settings[f.name] for f in dataclasses.fields(lar.Limits)})


def _identity(path):
    """What tells one version of a file from the next, or None."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_regular(path, most, what):
    """Up to ``most`` + 1 bytes of a regular file (never a FIFO, a device or a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        raise Refused([f"{shown(os.path.basename(path))}: cannot open {what}: "
                       f"{e.strerror or e}"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Refused([f"{shown(os.path.basename(path))}: {what} is not a regular file"])
    with os.fdopen(fd, "rb") as f:
        return f.read(most + 1)


def _copy(source, destination, most):
    """The archive's bytes, at most ``most``, copied (what is checked is
    this copy, not a file that may still change)."""
    data = _read_regular(source, most, "the archive")
    if len(data) > most:
        raise Refused([f"{shown(os.path.basename(source))}: larger than "
                       f"deploy.max_archive_bytes ({most} bytes)"])
    with open(destination, "xb") as f:
        f.write(data)


def _check_signature(archive_path, sha256_hex, trusted):
    where = archive_path + signature.SUFFIX
    if not os.path.lexists(where):
        raise Refused([f"{shown(os.path.basename(archive_path))}: no signature "
                       f"{shown(os.path.basename(where))} (deploy.trusted_keys is set; write the "
                       "signature before the archive)"])
    text = _read_regular(where, MAX_SIGNATURE_BYTES, "the signature")
    if not signature.check(text.decode("ascii", "replace"), sha256_hex, trusted):
        raise Refused([f"{shown(os.path.basename(where))}: not a signature of this archive by "
                       "any of deploy.trusted_keys"])


def _descriptor(path, source):
    if not os.path.lexists(path):
        raise Refused([f"{source}: the archive has no service descriptor there"])
    raw = _read_regular(path, MAX_DESCRIPTOR_BYTES, "the descriptor")
    if len(raw) > MAX_DESCRIPTOR_BYTES:
        raise Refused([f"{source}: the descriptor is larger than {MAX_DESCRIPTOR_BYTES} bytes"])
    try:
        data, unusable = config_json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused([f"{source}: /: invalid JSON: {e}"]) from None
    if unusable:
        raise Refused([f"{source}: {where or '/'}: {why}" for where, why in unusable])
    if not isinstance(data, dict):
        raise Refused([f"{source}: /: expected an object"])
    name = data.get("name")
    if not (isinstance(name, str) and configuration.is_service_name(name)):
        raise Refused([f"{source}: /name: required: the service's name, a Lua identifier"])
    return data


def _write_check_config(job, name, descriptor):
    """A config holding the new service alone, from its unpacked folder."""
    check_path = os.path.join(job, "check.json")
    service = {k: v for k, v in descriptor.items() if k not in ("name", "depends")}
    with open(check_path, "w") as f:
        json.dump({"server": {"bus": {"backend": "local"}, "workers": {"workers": 1}},
                   "directories": {"applications": os.path.join(job, "apps"),
                                   "deploy": os.path.join(job, "no-deploy"), "tmp": job},
                   "services": {name: dict(service, auto_start=True)}}, f)
    return check_path


def prepare(archive_path, running):
    """Step 1 (see the module docstring) for the ``running`` config."""
    archive_name = shown(os.path.basename(archive_path))
    stem, settings = os.path.basename(archive_path)[:-len(".lar")], running.server["deploy"]
    os.makedirs(running.tmp_dir, exist_ok=True)
    job = tempfile.mkdtemp(prefix=JOB_PREFIX, dir=running.tmp_dir)
    try:
        copy = os.path.join(job, "archive.lar")
        _copy(archive_path, copy, settings["max_archive_bytes"])
        if settings["trusted_keys"]:  # before anything of the archive is decompressed
            _check_signature(archive_path, lar.file_sha256(copy), settings["trusted_keys"])
        files = os.path.join(job, "files")
        os.mkdir(files)
        try:
            archive = lar.read(copy, limits(settings))
            lar.unpack(copy, archive, files)
        except lar.LarError as e:
            raise Refused([f"{archive_name}: {e}"]) from None
        source = f"{archive_name}:{shown(archive.top)}/{shown(stem)}.json"
        descriptor = _descriptor(os.path.join(files, archive.top, f"{stem}.json"), source)
        name = descriptor["name"]
        staged = os.path.join(job, "apps", name)
        os.mkdir(os.path.dirname(staged))
        os.rename(os.path.join(files, archive.top), staged)
        problems = configuration.check_descriptor(name, descriptor, staged, source)
        if problems:
            raise Refused(problems)
        entry = {"descriptor": descriptor, "archive": os.path.basename(archive_path),
                 "sha256": archive.file_sha256, "files": len(archive.entries),
                 "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        deployed = dict(running.deployed, **{name: entry})
        try:
            configuration.rebuild(running, deployed, locations={name: staged})
        except configuration.ConfigError as e:
            raise Refused(e.lines) from None
        return Prepared(job, name, staged, deployed, _write_check_config(job, name, descriptor))
    except BaseException:
        shutil.rmtree(job, ignore_errors=True)
        raise


def _remove_leftovers(tmp_dir):
    """The folders of deploys a killed process left in ``tmp_dir``."""
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return
    for name in names:
        if name.startswith(JOB_PREFIX):
            shutil.rmtree(os.path.join(tmp_dir, name), ignore_errors=True)


def _move(source, destination):
    """A folder into place; copied when it is on another file system."""
    try:
        os.rename(source, destination)
    except OSError:
        shutil.copytree(source, destination, symlinks=True)


class _Swap:
    """Step 3's changes to the file system, each undone in reverse order if
    a later one, or the reload, fails."""

    def __init__(self, running, prepared):
        self.running, self.prepared = running, prepared
        apps, name = running.apps_dir, prepared.name
        self.target = os.path.join(apps, name)
        self.incoming, self.replaced = (os.path.join(apps, f".{name}.{what}")
                                        for what in ("new", "old"))
        self.done = []

    def apply(self):
        os.makedirs(self.running.apps_dir, exist_ok=True)
        if not os.path.isdir(self.target) and os.path.isdir(self.replaced):
            os.rename(self.replaced, self.target)  # a swap a killed process left half done
        for leftover in (self.incoming, self.replaced):
            shutil.rmtree(leftover, ignore_errors=True)
        _move(self.prepared.staged, self.incoming)
        self.done.append(lambda: shutil.rmtree(self.incoming, ignore_errors=True))
        if os.path.isdir(self.target):
            os.rename(self.target, self.replaced)
            self.done.append(lambda: os.rename(self.replaced, self.target))
        os.rename(self.incoming, self.target)
        self.done.append(lambda: shutil.rmtree(self.target))
        state.write(self.running.deploy_dir, self.prepared.deployed)
        self.done.append(lambda: state.write(self.running.deploy_dir, self.running.deployed))

    def undo(self):
        """Reverse what was done; what could not be undone, one line each."""
        failed = []
        for step in reversed(self.done):
            try:
                step()
            except OSError as e:
                failed.append(f"could not undo the deploy: {e}")
        return failed

    def finish(self):
        shutil.rmtree(self.replaced, ignore_errors=True)


class Deployer(Service):
    """Deploys the archives of the running config's deploy folder.

    ``running()`` gives the running :class:`lapps.config.Config`;
    ``apply(config)`` makes a config the running one (a reload) and
    returns a Deferred that fails with :class:`ConfigError` when it could
    not; ``deploys`` counts the results (a prometheus Counter by result)."""

    name = "deployer"

    def __init__(self, running, apply, reactor, deploys, use_inotify=True, poll_interval=1.0):
        self.running_config, self.apply, self.reactor, self.deploys = \
            running, apply, reactor, deploys
        self.use_inotify, self.poll_interval = use_inotify, poll_interval
        self.watch = None
        self._lock = DeferredLock()
        self._pending = set()
        self._checking = None  # the child check under way, cancelled at stop

    def startService(self):
        super().startService()
        folder = self.running_config().deploy_dir
        if not os.path.isdir(folder):
            log.info("no deploy folder {folder}: hot deploy is off", lapps_event="deploy.off",
                     folder=folder)
            return
        _remove_leftovers(self.running_config().tmp_dir)
        self.watch = ArchiveWatch(folder, self.queue, self.reactor, self.poll_interval,
                                  self.use_inotify)
        self.reactor.callWhenRunning(self._watch)

    def _watch(self):
        if self.running and self.watch is not None:
            self.watch.start()
            log.info("deploying .lar archives written to {folder} ({how})",
                     lapps_event="deploy.watching", folder=self.watch.directory,
                     how=self.watch.how)

    def stopService(self):
        """Stop watching and kill a check under way; fires once the deploy
        under way, if any, has ended."""
        super().stopService()
        if self.watch is not None:
            self.watch.stop()
        if self._checking is not None:
            self._checking.cancel()
        return self._lock.run(lambda: None)

    def queue(self, path):
        """Deploy the archive at ``path`` after those already queued."""
        if path not in self._pending:
            self._pending.add(path)
            return self._lock.run(self._deploy, path).addErrback(self._unexpected, path)

    def _unexpected(self, failure, path):
        """What no step expected still ends in one line, never an unhandled error."""
        log.error("{archive}: the deploy stopped on {error}", lapps_event="deploy.failed",
                  archive=shown(os.path.basename(path)),
                  error=f"{failure.type.__name__}: {failure.getErrorMessage()}")

    @inlineCallbacks
    def _deploy(self, path):
        self._pending.discard(path)
        if not (self.running and os.path.lexists(path)):
            return  # stopping, or already deployed by an earlier event
        running, version = self.running_config(), _identity(path)
        prepared, refused = None, None
        try:
            prepared = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), prepare, path, running)
            yield self._check(prepared, running)
            yield self._install(prepared)
        except Refused as e:
            refused = e.lines
        except CancelledError:
            refused = ["the server stopped during the deploy"]
        except Exception as e:  # a file system error, say: one line, the archive kept
            refused = [f"{shown(os.path.basename(path))}: {type(e).__name__}: {e}"]
        finally:
            if prepared is not None:
                shutil.rmtree(prepared.job, ignore_errors=True)
        now = _identity(path)
        rewritten = now is not None and now != version  # the file there is not what was read
        if not self.running:  # the server stopped under it: try again at the next start
            log.info("{archive}: deploy interrupted by the stop; it is deployed at the next "
                     "start", lapps_event="deploy.interrupted",
                     archive=shown(os.path.basename(path)))
        elif refused is None:
            self._done(path, prepared, running, remove=not rewritten)
        else:
            self._refuse(path, refused, mark=not rewritten)
        if rewritten and self.running:
            log.info("{archive} was written again during its deploy: deploying it again",
                     lapps_event="deploy.rewritten", archive=shown(os.path.basename(path)))
            self.queue(path)

    @inlineCallbacks
    def _check(self, prepared, running):
        """Step 2."""
        log.info("{archive}: checking service {service} in a child process",
                 lapps_event="deploy.checking", service=prepared.name,
                 archive=shown(prepared.deployed[prepared.name]["archive"]))
        self._checking = check_in_child(prepared.check, running.server["deploy"]["check_timeout"],
                                        self.reactor)
        try:
            yield self._checking
        except configuration.ConfigError as e:
            archive = prepared.deployed[prepared.name]["archive"]
            raise Refused([line.replace(prepared.check, shown(archive)) for line in e.lines]) \
                from None
        finally:
            self._checking = None

    @inlineCallbacks
    def _install(self, prepared):
        """Step 3, on the config running now (a SIGHUP may have come since step 1)."""
        running = self.running_config()
        swap = _Swap(running, prepared)
        try:
            swap.apply()
            yield self.apply(configuration.rebuild(running, prepared.deployed))
        except Exception as e:
            lines = e.lines if isinstance(e, configuration.ConfigError) else \
                [f"{type(e).__name__}: {e}"]
            raise Refused(lines + swap.undo()) from None
        swap.finish()

    def _done(self, path, prepared, running, remove=True):
        for leftover in (path, path + signature.SUFFIX, path + ".failed", path + ".log")[
                0 if remove else 2:]:
            try:
                if os.path.lexists(leftover):
                    os.unlink(leftover)
            except OSError as e:
                log.warn("{archive}: cannot remove {leftover}: {error}",
                         lapps_event="deploy.unremoved", archive=shown(os.path.basename(path)),
                         leftover=shown(leftover), error=str(e))
        entry = prepared.deployed[prepared.name]
        verb = "updated" if prepared.name in running.services else "deployed"
        log.info("{archive}: service {service} {verb} (sha256 {sha256})",
                 lapps_event="deploy.done", archive=shown(entry["archive"]),
                 service=prepared.name, verb=verb, sha256=entry["sha256"])
        self.deploys.labels("ok").inc()

    def _refuse(self, path, lines, mark=True):
        archive = shown(os.path.basename(path))
        try:
            if mark:  # (an archive written again meanwhile stays as it is, for its next deploy)
                self._mark_failed(path, lines)
        except OSError as e:
            log.error("{archive}: cannot mark it failed: {error}", lapps_event="deploy.unmarked",
                      archive=archive, error=str(e))
        for line in lines:  # once the files say so too
            log.error("{archive} not deployed: {line}", lapps_event="deploy.refused",
                      archive=archive, line=line)
        self.deploys.labels("refused").inc()

    @staticmethod
    def _mark_failed(path, lines):
        """``NAME.lar.failed`` beside ``NAME.lar.log``, the reasons."""
        os.replace(path, path + ".failed")
        # written beside and renamed into place: a symlink there is replaced, never followed
        fd, written = tempfile.mkstemp(prefix=".log.", dir=os.path.dirname(path))
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(written, 0o644)
        os.replace(written, path + ".log")
