"""What a reload changes, worked out before anything is touched.

A reload compares the running configuration with the new one. Server keys
either apply live, to the connections made from then on (ACLs, the TLS
certificate, limits), or need a restart (the listening address, whether TLS
is on, pam_auth, mqr, the bus, the outbound TLS settings the running
services already hold); those are logged, not applied. A Lua service runs
on unchanged when its descriptor is the same apart from its ``acl`` (which
is swapped like the global one); any other difference restarts it, and a
service no longer wanted (removed, or ``auto_start`` turned off) stops.
"""

import dataclasses

#: Server keys (JSON pointers under the server object) a reload applies live.
LIVE = ("/acl", "/tls_certificates/cert", "/tls_certificates/key", "/tls_server_version",
        "/limits", "/workers/max_connections", "/workers/auto_fragment",
        "/shutdown_timeout", "/deploy", "/access_log")


def changed_keys(old, new, where=""):
    """The JSON pointers of the leaves that differ between two config objects."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [where]
    return [pointer for key in sorted(old.keys() | new.keys())
            for pointer in changed_keys(old.get(key), new.get(key), f"{where}/{key}")]


def _applies_live(pointer):
    return any(pointer == key or pointer.startswith(key + "/") for key in LIVE)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which Lua services a reload keeps, starts, restarts and stops (names,
    in the new start order, except ``stop``, in the old one); ``wanted`` is
    every service of the new config, in start order."""

    wanted: tuple
    keep: tuple
    start: tuple
    restart: tuple
    stop: tuple


def same_but_acl(old, new):
    """Whether two service descriptors differ at most in their ``acl``."""
    return dataclasses.replace(old, acl=None) == dataclasses.replace(new, acl=None)


def plan_services(running, wanted, services):
    """``running``: the running services' names → descriptors, in start
    order; ``wanted``: the names the new config starts, in start order;
    ``services``: the new config's descriptors by name."""
    keep = tuple(n for n in wanted if n in running and same_but_acl(running[n], services[n]))
    restart = tuple(n for n in wanted if n in running and n not in keep)
    return Plan(wanted=tuple(wanted), keep=keep, restart=restart,
                start=tuple(n for n in wanted if n not in running),
                stop=tuple(n for n in running if n not in wanted))


@dataclasses.dataclass(frozen=True)
class Reloaded:
    """What a successful :meth:`lapps.app.LAppSService.reload` changed."""

    added: tuple = ()          # services started
    removed: tuple = ()        # services stopped (their clients got 1001)
    restarted: tuple = ()      # services replaced by a new version (their clients got 1012)
    applied: tuple = ()        # server keys (JSON pointers) applied to new connections
    needs_restart: tuple = ()  # server keys that changed but apply only after a restart
    acl: bool = False          # an ACL decision may differ from before
    certificate: bool = False  # new TLS connections get a different certificate

    def __str__(self):
        said = [f"{label} {', '.join(items)}" for label, items in (
            ("added", self.added), ("removed", self.removed), ("restarted", self.restarted),
            ("applied", self.applied)) if items]
        said += [text for flag, text in ((self.acl, "new ACLs"),
                                         (self.certificate, "a new certificate")) if flag]
        return "; ".join(said) or "no change"


def server_changes(started, running, new):
    """``(applied, needs_restart)``: the live keys that differ between the
    running server config and the new one, and the other keys that differ
    between the config the server started with (they are still in effect)
    and the new one."""
    return (tuple(p for p in changed_keys(running, new) if _applies_live(p)),
            tuple(p for p in changed_keys(started, new) if not _applies_live(p)))
