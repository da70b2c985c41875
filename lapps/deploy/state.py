"""The deployed services, in ``deployed.json`` of the deploy folder.

LAppS merged a deployed descriptor into ``lapps.json`` and rewrote the
operator's files. lapps leaves them alone: each deployed descriptor is
kept here, with the archive it came from, and merged over the config's
``services`` when the config is loaded (a service the config also names
takes the deployed descriptor's keys over its own).
"""

import json
import os
import tempfile

FILE = "deployed.json"


def path(deploy_dir):
    return os.path.join(deploy_dir, FILE)


def read(deploy_dir):
    """``{name: {"descriptor": {...}, "archive": ..., "sha256": ..., "deployed_at": ...}}``;
    empty when nothing was deployed; ValueError (why, without the path) when
    the file is unusable."""
    try:
        with open(path(deploy_dir), "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable deploy state: {e}") from None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("descriptor"), dict)
            for v in services.values()):
        raise ValueError("not a lapps deploy state file")
    return services


def write(deploy_dir, services):
    """Replace the state file in one rename (a crash leaves the old or the new one)."""
    fd, temporary = tempfile.mkstemp(prefix=".deployed.", dir=deploy_dir)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump({"services": services}, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path(deploy_dir))
    except BaseException:
        os.unlink(temporary)
        raise


def merged(services, deployed):
    """The config's ``services`` object with the deployed descriptors over it."""
    result = dict(services) if isinstance(services, dict) else services
    if isinstance(result, dict):
        for name, entry in deployed.items():
            base = result.get(name)
            descriptor = {k: v for k, v in entry["descriptor"].items() if k != "name"}
            result[name] = {**base, **descriptor} if isinstance(base, dict) else descriptor
    return result
