"""The deployer: each archive the watch finds goes through these steps,
one archive at a time, and either all of them or none take effect.

1. In a thread: copy the archive into a new folder of ``directories.tmp``
   (what is checked is what is unpacked), check its signature when
   ``deploy.trusted_keys`` is set, read and unpack it
   (:mod:`lapps.deploy.lar`), validate its descriptor on its own and merged
   with the running config, and load its module in ``lapps check`` in a
   child process (a module that hangs at load holds up no client).
2. In the reactor: move the service folder into the applications folder
   (the old version aside), write the state file, and apply the new
   config as a reload does: a new service starts, a running one gets its
   new version (its clients get 1012), the rest goes on.
3. The archive is removed; or, on any refusal, kept as ``NAME.lar.failed``
   beside ``NAME.lar.log`` (the reasons), with the folder, the state and
   the running services as they were.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import DeferredLock, inlineCallbacks
from twisted.logger import Logger

from lapps import cli, config as configuration, config_json
from lapps.deploy import lar, signature, state
from lapps.deploy.watch import ArchiveWatch

log = Logger(namespace="lapps.deploy")

#: The largest signature file read.
MAX_SIGNATURE_BYTES = 1024
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


def limits(deploy_settings):
    return lar.Limits(**{f.name: deploy_settings[f.name] for f in dataclasses.fields(lar.Limits)})


def _copy(source, destination, most):
    """Copy at most ``most`` bytes (what is checked is this copy, not a file
    that may still change)."""
    with open(source, "rb") as src, open(destination, "xb") as dst:
        while block := src.read(1 << 16):
            if dst.tell() + len(block) > most:
                raise Refused([f"{os.path.basename(source)}: larger than "
                               f"deploy.max_archive_bytes ({most} bytes)"])
            dst.write(block)


def _check_signature(archive_path, sha256_hex, trusted):
    where = archive_path + signature.SUFFIX
    try:
        with open(where, "rb") as f:
            text = f.read(MAX_SIGNATURE_BYTES).decode("ascii", "replace")
    except FileNotFoundError:
        raise Refused([f"{os.path.basename(archive_path)}: no signature "
                       f"{os.path.basename(where)} (deploy.trusted_keys is set; write the "
                       "signature before the archive)"]) from None
    if not signature.check(text, sha256_hex, trusted):
        raise Refused([f"{os.path.basename(where)}: not a signature of this archive by any "
                       "of deploy.trusted_keys"])


def _descriptor(path, source):
    try:
        with open(path, "rb") as f:
            data, unusable = config_json.loads(f.read())
    except FileNotFoundError:
        raise Refused([f"{source}: the archive has no service descriptor there"]) from None
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


def _check_module(job, name, descriptor, timeout, archive_name):
    """``lapps check`` of the new service alone, from its unpacked folder."""
    check_path = os.path.join(job, "check.json")
    service = {k: v for k, v in descriptor.items() if k not in ("name", "depends")}
    with open(check_path, "w") as f:
        json.dump({"server": {"bus": {"backend": "local"}, "workers": {"workers": 1}},
                   "directories": {"applications": os.path.join(job, "apps"),
                                   "deploy": os.path.join(job, "no-deploy"), "tmp": job},
                   "services": {name: dict(service, auto_start=True)}}, f)
    try:
        cli.check_in_child_process(check_path, timeout)
    except configuration.ConfigError as e:
        raise Refused([line.replace(check_path, archive_name) for line in e.lines]) from None


def prepare(archive_path, running):
    """Step 1 (see the module docstring) for the ``running`` config."""
    archive_name = os.path.basename(archive_path)
    stem, settings = archive_name[:-len(".lar")], running.server["deploy"]
    os.makedirs(running.tmp_dir, exist_ok=True)
    job = tempfile.mkdtemp(prefix=JOB_PREFIX, dir=running.tmp_dir)
    try:
        copy = os.path.join(job, "archive.lar")
        _copy(archive_path, copy, settings["max_archive_bytes"])
        try:
            archive = lar.read(copy, limits(settings))
        except lar.LarError as e:
            raise Refused([f"{archive_name}: {e}"]) from None
        if settings["trusted_keys"]:
            _check_signature(archive_path, archive.file_sha256, settings["trusted_keys"])
        files = os.path.join(job, "files")
        os.mkdir(files)
        try:
            lar.unpack(copy, archive, files)
        except lar.LarError as e:
            raise Refused([f"{archive_name}: {e}"]) from None
        source = f"{archive_name}:{archive.top}/{stem}.json"
        descriptor = _descriptor(os.path.join(files, archive.top, f"{stem}.json"), source)
        name = descriptor["name"]
        staged = os.path.join(job, "apps", name)
        os.mkdir(os.path.dirname(staged))
        os.rename(os.path.join(files, archive.top), staged)
        problems = configuration.check_descriptor(name, descriptor, staged, source)
        if problems:
            raise Refused(problems)
        entry = {"descriptor": descriptor, "archive": archive_name,
                 "sha256": archive.file_sha256, "files": len(archive.entries),
                 "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        deployed = dict(running.deployed, **{name: entry})
        try:
            configuration.rebuild(running, deployed, locations={name: staged})
        except configuration.ConfigError as e:
            raise Refused(e.lines) from None
        _check_module(job, name, descriptor, settings["check_timeout"], archive_name)
        return Prepared(job, name, staged, deployed)
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
        """Stop watching; fires once the deploy under way, if any, has ended."""
        super().stopService()
        if self.watch is not None:
            self.watch.stop()
        return self._lock.run(lambda: None)

    def queue(self, path):
        """Deploy the archive at ``path`` after those already queued."""
        if path not in self._pending:
            self._pending.add(path)
            return self._lock.run(self._deploy, path)

    @inlineCallbacks
    def _deploy(self, path):
        self._pending.discard(path)
        if not (self.running and os.path.isfile(path)):
            return  # stopping, or already deployed by an earlier event
        running = self.running_config()
        prepared, refused = None, None
        try:
            prepared = yield threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), prepare, path, running)
            yield self._install(prepared)
        except Refused as e:
            refused = e.lines
        except Exception as e:  # a file system error, say: one line, the archive kept
            refused = [f"{os.path.basename(path)}: {type(e).__name__}: {e}"]
        finally:
            if prepared is not None:
                shutil.rmtree(prepared.job, ignore_errors=True)
        if refused is None:
            self._done(path, prepared, running)
        elif not self.running:  # the server stopped under it: try again at the next start
            log.info("{archive}: deploy interrupted by the stop; it is deployed at the next "
                     "start", lapps_event="deploy.interrupted", archive=os.path.basename(path))
        else:
            self._refuse(path, refused)

    @inlineCallbacks
    def _install(self, prepared):
        """Step 2, on the config running now (a SIGHUP may have come since
        step 1); undone if the new config cannot be applied."""
        running = self.running_config()
        apps, name = running.apps_dir, prepared.name
        target = os.path.join(apps, name)
        incoming, replaced = (os.path.join(apps, f".{name}.{what}") for what in ("new", "old"))
        os.makedirs(apps, exist_ok=True)
        for leftover in (incoming, replaced):
            shutil.rmtree(leftover, ignore_errors=True)
        _move(prepared.staged, incoming)
        had_old = os.path.isdir(target)
        if had_old:
            os.rename(target, replaced)
        os.rename(incoming, target)
        state.write(running.deploy_dir, prepared.deployed)
        try:
            yield self.apply(configuration.rebuild(running, prepared.deployed))
        except configuration.ConfigError as e:
            shutil.rmtree(target, ignore_errors=True)
            if had_old:
                os.rename(replaced, target)
            state.write(running.deploy_dir, running.deployed)
            raise Refused(e.lines) from None
        shutil.rmtree(replaced, ignore_errors=True)

    def _done(self, path, prepared, running):
        for leftover in (path, path + signature.SUFFIX, path + ".failed", path + ".log"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        entry = prepared.deployed[prepared.name]
        verb = "updated" if prepared.name in running.services else "deployed"
        log.info("{archive}: service {service} {verb} (sha256 {sha256})",
                 lapps_event="deploy.done", archive=entry["archive"], service=prepared.name,
                 verb=verb, sha256=entry["sha256"])
        self.deploys.labels("ok").inc()

    def _refuse(self, path, lines):
        archive = os.path.basename(path)
        try:
            os.replace(path, path + ".failed")
            with open(path + ".log", "w") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as e:
            log.error("{archive}: cannot mark it failed: {error}", lapps_event="deploy.unmarked",
                      archive=archive, error=str(e))
        for line in lines:  # once the files say so too
            log.error("{archive} not deployed: {line}", lapps_event="deploy.refused",
                      archive=archive, line=line)
        self.deploys.labels("refused").inc()
