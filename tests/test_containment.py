"""Lua containment (issue 6, item 6): a handler that runs away is stopped
after handler_timeout with 1011, however it hides (pcall, coroutines); a
runtime that runs out of memory is rebuilt while the service goes on; no
Lua code reaches a Python object; bytecode is refused by every loader."""

import asyncio
import re

import pytest
import websockets
from lupa import luajit21

from conftest import TEST_APPS, reactive, write_config

BUDGET = 0.5
NO_BYTECODE = "bytecode is not allowed: lapps loads Lua source only"


def contained(**extra):
    return reactive("/contained", **{"preload": ["nap"], "handler_timeout": BUDGET, **extra})


@pytest.fixture
def server(start_server, tmp_path):
    return start_server({"contained": contained(settings={"dir": str(tmp_path)})},
                        applications=TEST_APPS)


def run(coro):
    return asyncio.run(coro)


async def ask(ws, text):
    await ws.send(text)
    return await ws.recv()


async def closed_by(ws, text):
    """Send ``text``; the server must close the connection without a reply."""
    await ws.send(text)
    with pytest.raises(websockets.ConnectionClosed):
        reply = await ws.recv()
        pytest.fail(f"got {reply!r} before the close")
    return ws.close_code


@pytest.mark.parametrize("command", ["loop", "pcall_loop", "swallow", "coroutine",
                                     "early_coroutine", "loaded_loop", "around_lapps_loop",
                                     "inside_lapps_loop"])
def test_a_runaway_handler_is_stopped_with_1011_and_the_instance_goes_on(server, command):
    """A plain loop, one that pcall catches again and again, one whose every
    stop is caught, loops in coroutines of the service (one created when
    the module loaded, long before the hook fired), in code it loads at run
    time, around and inside a (compiled) loop of lapps's nljson: all end
    with 1011. The instance keeps its runtime (its state is intact) and
    serves at once."""
    async def go():
        async with websockets.connect(server.url("/contained")) as other:
            assert await ask(other, "keep before") == "kept 1"
            runaway = await websockets.connect(server.url("/contained"))
            code = await closed_by(runaway, command)
            return code, await ask(other, "keep after")

    assert run(go()) == (1011, "kept 2")
    server.wait_for(rf"contained\[0\]\.onMessage \(handler \d+\) stopped after "
                    rf"handler_timeout \({BUDGET} s\)")
    server.wait_for(r"handler_timeout: the callback ran for more than 0.5 s")
    assert server.count("contained::onStart") == 1, "the runtime was rebuilt"
    assert server.process.poll() is None


def test_time_suspended_in_a_blocking_call_does_not_count(server):
    async def go():
        async with websockets.connect(server.url("/contained")) as ws:
            return await ask(ws, f"rest {int(BUDGET * 1.5 * 1e6)}"), await ask(ws, "again")

    assert run(go()) == ("rested", "again")
    assert server.count("handler_timeout") == 0


def test_the_budget_covers_ondisconnect(server):
    async def go():
        async with websockets.connect(server.url("/contained")) as ws:
            armed = await ask(ws, "spin_at_disconnect")
        async with websockets.connect(server.url("/contained")) as ws:
            return armed, await ask(ws, "keep still")

    assert run(go()) == ("armed", "kept 1")
    server.wait_for(r"contained\[0\]\.onDisconnect \(handler \d+\) stopped after handler_timeout")
    assert server.count("contained::onStart") == 1, "the runtime was rebuilt"


def test_the_budget_covers_onstart_and_onshutdown(start_server):
    """An onStart that never returns leaves the service without a running
    instance (503), and the server starts and serves its other services;
    an onShutdown that never returns does not keep the server from exiting."""
    server = start_server({"spinstart": reactive("/spinstart", handler_timeout=BUDGET),
                           "contained": contained()}, applications=TEST_APPS)

    async def go():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(server.url("/spinstart"))
        async with websockets.connect(server.url("/contained")) as ws:
            return refused.value.response.status_code, await ask(ws, "spin_at_shutdown")

    assert run(go()) == (503, "armed")
    server.wait_for(r"spinstart\[0\]\.onStart \(handler None\) stopped after handler_timeout")
    server.stop()
    assert server.count(r"contained\[0\]\.onShutdown \(handler None\) stopped after "
                        r"handler_timeout") == 1
    assert server.count(r"service contained instance 0 stopped") == 1


def test_the_jit_cannot_be_turned_back_on(server):
    """Compiled loops never call the hook: the JIT stays off."""
    async def go():
        async with websockets.connect(server.url("/contained")) as ws:
            return await ask(ws, "jit_on")

    assert run(go()) == "the JIT stays off for the code of reactive services (handler_timeout)"


def test_hooks_are_global_to_a_luajit_state():
    """What the watchdog relies on: in LuaJIT (unlike PUC Lua, where each
    coroutine has its own hook), a hook set in one coroutine fires in the
    main thread and in a coroutine created before it was set."""
    runtime = luajit21.LuaRuntime(encoding=None)
    fired = runtime.execute(b"""
        jit.off()
        local fired = {}
        local function hook() fired[coroutine.running() or "main"] = true end
        local function work() for _ = 1, 100000 do end end
        local before = coroutine.create(work)
        coroutine.resume(coroutine.create(function() debug.sethook(hook, "", 100) end))
        coroutine.resume(before)
        work()
        debug.sethook()
        return fired[before] == true, fired.main == true
    """)
    assert fired == (True, True)


def test_running_out_of_memory_rebuilds_the_runtime(start_server):
    """The connection whose message exhausted the runtime gets 1011; the
    other connection of that instance, whose Lua state went with the old
    runtime, gets 1012 (Service Restart); the other instance is untouched.
    The new runtime ran onStart, then each closed connection's onDisconnect,
    and serves with fresh state."""
    server = start_server({"contained": contained(instances=2, max_memory=16 * 1024 * 1024)},
                          applications=TEST_APPS)

    async def go():
        url = server.url("/contained")
        # round robin: bystander and culprit on instance 0, other on instance 1
        bystander, other, culprit = [await websockets.connect(url) for _ in range(3)]
        assert [await ask(ws, "keep x") for ws in (bystander, other, culprit)] == \
            ["kept 1", "kept 1", "kept 2"]
        culprit_code = await closed_by(culprit, "grow")
        with pytest.raises(websockets.ConnectionClosed):
            await bystander.recv()
        still = await ask(other, "keep y")
        # the next two connections go to instance 1, then to the rebuilt instance 0
        later = [await websockets.connect(url) for _ in range(2)]
        fresh = [await ask(ws, "keep z") for ws in later]
        for ws in [other] + later:
            await ws.close()
        return culprit_code, bystander.close_code, still, fresh

    assert run(go()) == (1011, 1012, "kept 2", ["kept 3", "kept 1"])
    server.wait_for(r"not enough memory")
    server.wait_for(r"service contained instance 0: its Lua runtime ran out of memory; "
                    r"rebuilding it, and closing with 1012 the other connections bound to "
                    r"it \(1\)")
    server.wait_for(r"contained::onDisconnect", count=2)
    starts = [i for i, line in enumerate(server.lines) if "contained::onStart" in line]
    ends = [i for i, line in enumerate(server.lines) if "contained::onDisconnect" in line]
    assert len(starts) == 3 and starts[2] < ends[0], "onDisconnect before the new onStart"
    assert server.process.poll() is None


def test_an_instance_that_cannot_be_rebuilt_leaves_rotation(start_server, tmp_path):
    server = start_server({
        "flaky": reactive("/flaky", max_memory=16 * 1024 * 1024,
                          settings={"marker": str(tmp_path / "loaded")}),
        "contained": contained()}, applications=TEST_APPS)

    async def go():
        async with websockets.connect(server.url("/contained")) as other:
            culprit = await websockets.connect(server.url("/flaky"))
            code = await closed_by(culprit, "grow")
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(server.url("/flaky"))
            return code, refused.value.response.status_code, await ask(other, "still")

    assert run(go()) == (1011, 503, "still")
    server.wait_for(r"service flaky instance 0 could not be rebuilt and leaves rotation: "
                    r".*loaded twice")


def test_rebuilt_runtimes_are_freed(start_server):
    """Ten rebuilds in a row leave the server no bigger than about two
    runtimes at their cap: each old runtime is freed, not left to a full
    garbage collection some time later."""
    cap = 32 * 1024 * 1024
    server = start_server({"contained": contained(max_memory=cap)}, applications=TEST_APPS)

    async def exhaust():
        async with websockets.connect(server.url("/contained")) as ws:
            return await closed_by(ws, "grow")

    assert run(exhaust()) == 1011
    before = _rss(server)
    assert [run(exhaust()) for _ in range(10)] == [1011] * 10
    server.wait_for("service contained instance 0 started", count=12)
    assert _rss(server) - before < 2 * cap


def _rss(server):
    status = open(f"/proc/{server.process.pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def test_no_way_out_of_lua(server):
    """The known ways from Lua to Python objects or raw memory are closed;
    debug keeps what reads the stack."""
    async def go():
        async with websockets.connect(server.url("/contained")) as ws:
            return await ask(ws, "escape")

    report = dict(item.split("=", 1) for item in run(go()).split("\x1e"))
    assert report == {
        "python": "nil", "require(python)": _not_found("python", report),
        "require(ffi)": _not_found("ffi", report),
        "require(string.buffer)": _not_found("string.buffer", report),
        "require(jit.util)": _not_found("jit.util", report),
        "require(jit.profile)": _not_found("jit.profile", report),
        "loadlib": "nil", "searchers": "2", "debug": "getinfo,getlocal,traceback",
        "getmetatable(ws.send)": "nil", "dump(ws.send)": NO_BYTECODE,
    }


def _not_found(name, report):
    """A require that failed because no searcher has ``name``."""
    outcome = report[f"require({name})"]
    assert outcome.startswith(f"module '{name}' not found:"), outcome
    assert ".so'" not in outcome, "a C searcher still looks for it"
    return outcome


def test_standalone_services_are_sealed_too_but_keep_the_jit(start_server):
    """They have no handler_timeout (they are loops by design, stopped
    through must_stop), so their code is compiled as usual."""
    server = start_server({"sealed": {"standalone": True, "auto_start": True, "instances": 1,
                                      "preload": ["nap"]}}, applications=TEST_APPS)
    line = server.wait_for(r"^sealed .*").group(0)  # its print, not the log's "service sealed"
    assert line == (f"sealed ffi=false registry=nil sethook=nil bytecode={NO_BYTECODE} "
                    "jit=true")
    server.stop()
    assert server.count("did not stop") == 0


def test_bytecode_is_refused_by_every_loader(server, tmp_path):
    dumped = luajit21.LuaRuntime(encoding=None).execute(
        b"return string.dump(function() return 1 end)")
    assert dumped.startswith(b"\x1bLJ")
    (tmp_path / "precompiled.lua").write_bytes(dumped)
    (tmp_path / "textual.lua").write_text("return 'from file'\n")

    async def go():
        async with websockets.connect(server.url("/contained")) as ws:
            return await ask(ws, "bytecode")

    report = run(go())
    assert report == "\n".join([
        f"load={NO_BYTECODE}", f"load_reader={NO_BYTECODE}", f"loadstring={NO_BYTECODE}",
        f"loadfile={NO_BYTECODE}", f"dofile={NO_BYTECODE}",
        f"require=error loading module 'precompiled' from file '{tmp_path}/precompiled.lua':",
        f"\t{NO_BYTECODE}",
        "text=from text,2,from file,from file,from file"])


def test_no_python_object_is_reachable_from_service_code(tmp_path):
    """Walk everything a service's code can reach from its globals (tables,
    keys, metatables, function environments, coroutines' locals) in real
    instances of a raw and a LAppS service with every module preloaded: only
    Lua values. (lupa hands a Python object back to Python as itself.)"""
    from lapps.app import LAppSService
    from lapps.lua.runtime import new_runtime

    every = ["nap", "time", "murmur", "cws", "pam_auth", "mqr"]
    config = write_config(tmp_path, {
        "contained": contained(preload=every),
        "lprobe": reactive("/lprobe", protocol="LAppS", preload=every),
    }, applications=TEST_APPS)
    app = LAppSService(str(config))
    reached = {}
    for service in app.lua_services:
        values = list(service.instances[0].runtime.execute(_WALK).values())
        assert len(values) > 200, "the walk reached nothing"
        reached[service.name] = [v for v in values if luajit21.lua_type(v) is None]
    assert reached == {"contained": [], "lprobe": []}

    seeded = new_runtime(16 * 1024 * 1024, "")  # the walk finds one when it is there
    seeded.globals().found_me = len
    assert [v for v in seeded.execute(_WALK).values() if luajit21.lua_type(v) is None] == [len]


_WALK = b"""
local seen, found = {}, {}
local function visit(v)
  local t = type(v)
  if (t ~= "table" and t ~= "function" and t ~= "userdata" and t ~= "thread") or seen[v] then
    return
  end
  seen[v] = true
  found[#found + 1] = v
  if t == "table" then
    for key, value in next, v do visit(key); visit(value) end
  elseif t == "function" then
    visit(getfenv(v))
  elseif t == "thread" and debug.getlocal then
    for level = 0, 100 do
      for i = 1, 200 do
        local ok, name, value = pcall(debug.getlocal, v, level, i)
        if not ok or name == nil then break end
        visit(value)
      end
    end
  end
  visit(getmetatable(v))
end
visit(_G)
visit(package.loaded)
visit(getmetatable(""))
return found
"""
