"""Lua services written into a test's own applications folder: the sources
(an echo, one that raises what it is sent, one held until released through
mqr), and folders of them, for the admin, status page, systemd and origin
tests."""

import shutil
import textwrap
from pathlib import Path

from conftest import APPS, reactive


HELD = """
held = {}
-- init waits until something is posted to mqr queue "go" (by the opener service)
function held.init()
  print("held waiting")
  local value = mqr.create("go"):recv()
  print("held released by " .. tostring(value))
end
-- and run until the server stops (recv then returns nil at once)
function held.run() mqr.create("never"):recv() end
return held
"""
OPENER = """
opener = {}
function opener.onStart() end
function opener.onMessage(handler, opcode, message)
  assert(mqr.create("go"):post(message))
  return ws:send(handler, opcode, message)
end
function opener.onDisconnect(handler) end
function opener.onShutdown() end
return opener
"""
ECHO = """
echo = {}
function echo.onStart() end
function echo.onMessage(handler, opcode, message) return ws:send(handler, opcode, message) end
function echo.onDisconnect(handler) end
function echo.onShutdown() end
return echo
"""
#: Raises what the client sent: a Lua error whose text a client controls.
SHOUTY = ECHO.replace("return ws:send(handler, opcode, message)", "error(message)").replace(
    "echo", "shouty")


def write_apps(directory, **sources):
    """``name=lua source`` → ``directory/name/name.lua``; returns ``directory``."""
    for name, source in sources.items():
        (directory / name).mkdir(parents=True, exist_ok=True)
        (directory / name / f"{name}.lua").write_text(textwrap.dedent(source))
    return directory


def held_services(**extra_of_held):
    """``held`` (standalone, started once released), ``waiter`` (depends on
    it) and ``opener`` (a message to ``/open`` releases ``held``)."""
    return {
        "held": {"standalone": True, "preload": ["mqr"], **extra_of_held},
        "waiter": reactive("/wait", depends=["held"]),
        "opener": reactive("/open", preload=["mqr"]),
    }


def held_apps(directory):
    return write_apps(directory / "apps", held=HELD, opener=OPENER, waiter=ECHO.replace(
        "echo", "waiter"))


def echo_apps(directory, services):
    """An applications folder with the shipped echo module under each name."""
    root = Path(directory) / "apps"
    for name in services:
        (root / name).mkdir(parents=True)
        shutil.copy(APPS / "echo" / "echo.lua", root / name / f"{name}.lua")
    return root
