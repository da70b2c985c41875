"""Hot deploy of LAppS ``.lar`` archives into a running ``twistd -n lapps``:
archives made by ``lapps lar pack`` and archives built here byte by byte
from the spec's layout (§2.4.1) answer at their target; an update restarts
only its own service (1012); every crafted archive is refused with a line
that says why, kept as ``.failed`` beside a ``.log``, and leaves the file
tree as it was; signatures; a restart keeps what was deployed."""

import asyncio
import bz2
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from conftest import APPS, TEST_APPS, Server, Supervised, reactive
from lapps.deploy.deployer import Deployer
from lapps.deploy.watch import ArchiveWatch
from redis_server import free_port

RECORDER = (TEST_APPS / "recorder" / "recorder.lua").read_text()
LAPPS = [sys.executable, "-m", "lapps.cli"]


# --- archives, byte by byte from §2.4.1 (independent of lapps.deploy.lar) ----------

def lar_bytes(files, magic=b"LAR", version=1, digest=None, trailing=b"", toc_extra=b""):
    """``files``: (path, content, mode[, declared size[, stream]]) → a .lar image."""
    entries, streams, digests = [], [], []
    for path, content, mode, *rest in files:
        size = rest[0] if rest else len(content)
        stream = rest[1] if len(rest) > 1 else bz2.compress(content)
        file_digest = hashlib.sha256(content).digest()
        encoded = path.encode()
        entries.append(struct.pack("<QQII", size, len(stream), len(encoded), mode)
                       + file_digest + encoded)
        streams.append(stream)
        digests.append(file_digest)
    toc = b"".join(entries) + toc_extra
    packed_toc = bz2.compress(toc)
    header = magic + bytes([version]) + struct.pack("<III", len(toc), len(packed_toc), len(files))
    header += digest if digest is not None else hashlib.sha256(b"".join(digests)).digest()
    assert len(header) == 48
    return header + packed_toc + b"".join(streams) + trailing


def service_files(name, target, version="v1", lua=RECORDER, folder=None, **descriptor):
    """A recorder service's descriptor and module, as archive entries."""
    folder = folder or name
    desc = {"name": name, "request_target": target, "protocol": "raw",
            "settings": {"label": name, "version": version}, **descriptor}
    return [(f"{folder}/{name}.json", json.dumps(desc).encode(), 0o644),
            (f"{folder}/{name}.lua", lua.encode(), 0o644)]


# --- a server with a deploy folder -------------------------------------------------

class Site:
    """A server's folders: applications (echo in it), deploy, tmp."""

    def __init__(self, root, **server):
        self.root, self.apps = root, root / "apps"
        self.deploy, self.tmp = root / "deploy", root / "tmp"
        shutil.copytree(APPS / "echo", self.apps / "echo")
        self.deploy.mkdir()
        self.tmp.mkdir()
        self.config = root / "lapps.json"
        self.config.write_text(json.dumps({
            "server": {"ip": "127.0.0.1", "port": 0, **server},
            "directories": {"applications": "apps", "deploy": "deploy", "tmp": "tmp"},
            "services": {"echo": reactive("/echo")}}))

    def drop(self, name, data):
        """Write an archive the way cp does (inotify sees it closed)."""
        (self.deploy / name).write_bytes(data)

    def tree(self):
        """Every file and folder under the site but deploy/ (with content digests)."""
        seen = {}
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if relative.parts[0] in ("deploy", "server.log"):
                continue
            seen[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest() \
                if path.is_file() else "dir"
        return seen


@pytest.fixture
def site(tmp_path):
    return Site(tmp_path)


def serve(site, reap):
    return reap(Server(site.config))


async def echoes(url, message="hi", reply=None):
    async with websockets.connect(url) as ws:
        await ws.send(message)
        assert await asyncio.wait_for(ws.recv(), 10) == (reply or message)


def deployed(server, name, count=1):
    return server.wait_for(rf"service {name} (deployed|updated) \(sha256 ([0-9a-f]{{64}})\)",
                           count=count, timeout=30)


# --- deploying -----------------------------------------------------------------------

def test_a_packed_and_a_hand_built_archive_deploy_and_answer(site, reap, tmp_path):
    (site.tmp / "deploy-left-by-a-killed-server").mkdir()
    server = serve(site, reap)
    source = tmp_path / "src" / "packed"
    source.mkdir(parents=True)
    for path, content, _ in service_files("packed", "/packed"):
        (source / Path(path).name).write_bytes(content)
    made = subprocess.run(LAPPS + ["lar", "pack", str(source), "-o", str(tmp_path / "packed.lar")],
                          capture_output=True, text=True, check=True)
    assert "2 files" in made.stdout
    shutil.copy(tmp_path / "packed.lar", site.deploy / "packed.lar")
    digest = deployed(server, "packed").group(2)
    assert digest == hashlib.sha256((tmp_path / "packed.lar").read_bytes()).hexdigest()

    name, content, _ = service_files("byhand", "/byhand", "by hand")[1]
    site.drop("byhand.lar", lar_bytes(service_files("byhand", "/byhand", "by hand")[:1]
                                      + [(name, content, 0o6777)]))
    deployed(server, "byhand")
    assert (site.apps / "byhand" / "byhand.lua").stat().st_mode & 0o7777 == 0o755
    asyncio.run(echoes(server.url("/packed"), "version", "v1"))
    asyncio.run(echoes(server.url("/byhand"), "version", "by hand"))
    asyncio.run(echoes(server.url("/echo")))
    assert sorted(os.listdir(site.deploy)) == ["deployed.json"]  # archives removed
    assert sorted(os.listdir(site.apps)) == ["byhand", "echo", "packed"]
    assert not os.listdir(site.tmp)
    state = json.loads((site.deploy / "deployed.json").read_text())["services"]
    assert state["packed"]["sha256"] == digest and state["byhand"]["archive"] == "byhand.lar"
    assert json.loads(site.config.read_text())["services"].keys() == {"echo"}  # not rewritten
    assert server.bad_lines() == []


def test_an_update_restarts_its_service_alone_and_a_restart_keeps_it(site, reap):
    server = serve(site, reap)
    site.drop("app.lar", lar_bytes(service_files("app", "/app", "v1")))
    deployed(server, "app")

    async def update():
        async with websockets.connect(server.url("/app")) as app, \
                websockets.connect(server.url("/echo")) as echo:
            site.drop("app.lar", lar_bytes(service_files("app", "/app", "v2")))
            await asyncio.wait_for(app.wait_closed(), 30)
            assert app.close_code == 1012
            await echo.send("still here")
            assert await echo.recv() == "still here"
        await echoes(server.url("/app"), "version", "v2")

        # the same descriptor with other code is a new version too
        async with websockets.connect(server.url("/app")) as app:
            site.drop("app.lar", lar_bytes(service_files(
                "app", "/app", "v2", lua=RECORDER + "\n-- v3\n")))
            await asyncio.wait_for(app.wait_closed(), 30)
            assert app.close_code == 1012

    asyncio.run(update())
    deployed(server, "app", count=3)
    assert "-- v3" in (site.apps / "app" / "app.lua").read_text()
    assert [n for n in os.listdir(site.apps) if n.startswith(".")] == []  # the old one gone
    assert server.stop() == -signal.SIGTERM
    assert server.bad_lines() == []

    checked = subprocess.run(LAPPS + ["check", str(site.config)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout
    assert re.search(r"deployed: app from app\.lar \(sha256 [0-9a-f]{64}", checked.stdout)
    again = serve(site, reap)
    asyncio.run(echoes(again.url("/app"), "version", "v2"))


#: Loads in the deploy's check, not once the state file is beside the applications folder:
#: the server's reload of it fails after the move, which is then undone.
FAILS_IN_THE_SERVER = RECORDER.replace("local recorder = {}", """local recorder = {}
assert(io.open(os.getenv("LAPPS_APPS_DIR") .. "../deploy/deployed.json") == nil,
       "refuses to run beside a deploy state")""")


def test_a_version_the_server_cannot_start_is_undone(site, reap):
    server = serve(site, reap)
    site.drop("app.lar", lar_bytes(service_files("app", "/app", "v1")))
    deployed(server, "app")
    state, module = (site.deploy / "deployed.json").read_text(), site.apps / "app" / "app.lua"
    before = site.tree()

    async def refused_while_connected():
        async with websockets.connect(server.url("/app")) as app:
            site.drop("app.lar", lar_bytes(service_files("app", "/app", "v2",
                                                         lua=FAILS_IN_THE_SERVER)))
            line = server.wait_for(r"app\.lar not deployed: .*", timeout=30).group(0)
            assert "refuses to run beside a deploy state" in line
            await app.send("version")  # the old version goes on, with its clients
            assert await asyncio.wait_for(app.recv(), 10) == "v1"

    asyncio.run(refused_while_connected())
    assert (site.deploy / "deployed.json").read_text() == state
    assert module.read_text() == RECORDER and site.tree() == before
    assert server.count("config.reload_failed|reload failed") >= 1


#: Takes a second to load: the window in which the test writes the archive again.
SLOW_TO_LOAD = RECORDER.replace("local recorder = {}", """local recorder = {}
local began = os.clock()
while os.clock() - began < 1 do end""")


def test_an_archive_written_again_during_its_deploy_is_deployed_again(site, reap, tmp_path):
    server = serve(site, reap)
    site.drop("again.lar", lar_bytes(service_files("again", "/again", "v1", lua=SLOW_TO_LOAD)))
    server.wait_for(r"again\.lar: checking service again", timeout=30)
    newer = tmp_path / "again.lar"
    newer.write_bytes(lar_bytes(service_files("again", "/again", "v2")))
    os.replace(newer, site.deploy / "again.lar")  # as mv does
    server.wait_for(r"again\.lar was written again during its deploy", timeout=30)
    deployed(server, "again", count=2)
    asyncio.run(echoes(server.url("/again"), "version", "v2"))
    assert not (site.deploy / "again.lar").exists()


#: Each crafted archive, and a part of the line that refuses it.
def _bomb():
    return [("bomb/bomb.lua", b"\0" * (4 << 20), 0o644, 100)]


REFUSED = {
    "magic": (lar_bytes(service_files("m", "/m"), magic=b"ZIP"), "not a .lar archive"),
    "version": (lar_bytes(service_files("m", "/m"), version=2), "only .lar version 1"),
    "digest": (lar_bytes(service_files("m", "/m"), digest=b"\0" * 32),
               "header's digest does not match"),
    "file_digest": (lar_bytes([("m/m.lua", b"return {}", 0o644, 9, bz2.compress(b"return {:"))]
                              + service_files("m", "/m")[:1]), "SHA-256 mismatch"),
    "absolute": (lar_bytes([("/tmp/evil.lua", b"x", 0o644)]), "absolute path"),
    "dotdot": (lar_bytes([("m/../../evil.lua", b"x", 0o644)]), "'..'"),
    "two_tops": (lar_bytes(service_files("m", "/m") + [("other/x.lua", b"x", 0o644)]),
                 "exactly one top-level folder"),
    "top_file": (lar_bytes([("evil.lua", b"x", 0o644)]), "not inside the archive's top-level"),
    "symlink": (lar_bytes(service_files("m", "/m") + [("m/link", b"/etc/passwd", 0o120777)]),
                "is a symlink"),
    "device": (lar_bytes(service_files("m", "/m") + [("m/dev", b"", 0o020644)]),
               "not a regular file"),
    "trailing": (lar_bytes(service_files("m", "/m"), trailing=b"junk"), "the file has"),
    "toc_extra": (lar_bytes(service_files("m", "/m"), toc_extra=b"\0" * 8),
                  "bytes after its"),
    "declared_size": (lar_bytes([("m/m.lua", b"return {}", 0o644, 5)]
                                + service_files("m", "/m")[:1]), "decompresses past"),
    "bomb": (lar_bytes(_bomb()), "decompresses past its declared 100 bytes"),
    "unpacked_limit": (lar_bytes([("big/big.lua", b"\0" * (2 << 20), 0o644)]),
                       "more than deploy.max_unpacked_bytes"),
    "archive_limit": (lar_bytes([("big/big.lua", os.urandom(600 << 10), 0o644)]),
                      "larger than deploy.max_archive_bytes"),
    "deep": (lar_bytes(service_files("m", "/m") + [("m/" + "d/" * 40 + "x.lua", b"x", 0o644)]),
             "more than 32 folders deep"),
    "long_name": (lar_bytes(service_files("m", "/m") + [("m/" + "n" * 300, b"x", 0o644)]),
                  "a name longer than 255 bytes"),
    "descriptor_folder": (lar_bytes([("m/descriptor_folder.json/x", b"{}", 0o644)]),
                          "the descriptor is not a regular file"),
    "no_descriptor": (lar_bytes(service_files("m", "/m", folder="m")[1:]),
                      "no service descriptor"),
    "no_name": (lar_bytes([("m/no_name.json", b'{"request_target": "/n"}', 0o644)]),
                "/name: required"),
    "bad_key": (lar_bytes(service_files("bad_key", "/b", instances=0)),
                "bad_key.lar:bad_key/bad_key.json: /instances: expected integer >= 1, got 0"),
    "same_target": (lar_bytes(service_files("same_target", "/echo")),
                    '"/echo" is already the target of service "echo"'),
    "bad_lua": (lar_bytes(service_files("bad_lua", "/bad", lua="return {")),
                "bad_lua.lar: /services/bad_lua:"),
}


def test_every_crafted_archive_is_refused_and_nothing_is_written(tmp_path, reap):
    site = Site(tmp_path, deploy={"max_unpacked_bytes": 1 << 20,
                                  "max_archive_bytes": 512 << 10})
    server = serve(site, reap)
    victim = tmp_path / "victim.txt"
    victim.write_text("the operator's file")
    before = site.tree()
    for name, (data, why) in REFUSED.items():
        site.drop(f"{name}.lar", data)
        line = server.wait_for(rf"{name}\.lar not deployed: .*", timeout=30).group(0)
        assert why in line, (name, line)
        assert (site.deploy / f"{name}.lar.failed").read_bytes() == data
        assert why in (site.deploy / f"{name}.lar.log").read_text()
        assert not (site.deploy / f"{name}.lar").exists()
        assert site.tree() == before, name  # apps/ as it was, tmp/ empty again
    assert not (site.deploy / "deployed.json").exists()
    assert not os.path.exists("/tmp/evil.lua")

    (site.deploy / "linked.lar.log").symlink_to(victim)
    site.drop("linked.lar", b"LAR")
    server.wait_for(r"linked\.lar not deployed", timeout=30)
    assert victim.read_text() == "the operator's file"  # the link was replaced, not followed
    assert "too short" in (site.deploy / "linked.lar.log").read_text()

    for odd in (b"\xff\xfe.lar", b"forged\n2026 [lapps.deploy#info] fake.lar"):
        (site.deploy / os.fsdecode(odd)).write_bytes(b"LAR")
        server.wait_for(re.escape(ascii(os.fsdecode(odd))) + r" not deployed", timeout=30)
    assert not any(line.startswith("2026 [lapps.deploy#info] fake") for line in server.lines)
    (site.deploy / "deployed.json").mkdir()  # the state cannot be written: all is undone
    site.drop("echo.lar", lar_bytes(service_files("echo", "/echo")))
    line = server.wait_for(r"echo\.lar not deployed: .*", timeout=30).group(0)
    assert "IsADirectoryError" in line
    (site.deploy / "deployed.json").rmdir()
    assert site.tree() == before  # apps/echo is the operator's echo still
    asyncio.run(echoes(server.url("/echo")))
    assert server.bad_lines() == [line for line in server.lines
                                  if "not deployed" in line]  # errors, not tracebacks


def test_signatures_when_trusted_keys_are_set(tmp_path, reap):
    key = tmp_path / "deploy.pem"
    made = subprocess.run(LAPPS + ["lar", "keygen", str(key)], capture_output=True, text=True,
                          check=True)
    public = made.stdout.split()[-1]
    other = tmp_path / "other.pem"
    subprocess.run(LAPPS + ["lar", "keygen", str(other)], capture_output=True, check=True)
    (tmp_path / "site").mkdir()
    site = Site(tmp_path / "site", deploy={"trusted_keys": [public]})
    server = serve(site, reap)

    def archive(name, signer=None):
        path = tmp_path / f"{name}.lar"
        path.write_bytes(lar_bytes(service_files(name, f"/{name}")))
        if signer:
            subprocess.run(LAPPS + ["lar", "sign", str(path), "--key", str(signer)], check=True,
                           capture_output=True)
            shutil.copy(f"{path}.sig", site.deploy / f"{name}.lar.sig")  # the signature first
        shutil.copy(path, site.deploy / f"{name}.lar")

    os.mkfifo(site.deploy / "piped.lar.sig")  # read, it would block the deployer for good
    (tmp_path / "piped.lar").write_bytes(lar_bytes(service_files("piped", "/piped")))
    shutil.copy(tmp_path / "piped.lar", site.deploy / "piped.lar")
    assert "the signature is not a regular file" in server.wait_for(
        r"piped\.lar not deployed.*", timeout=30).group(0)
    archive("unsigned")
    assert "no signature unsigned.lar.sig" in server.wait_for(r"unsigned\.lar not deployed.*",
                                                              timeout=30).group(0)
    archive("stranger", signer=other)
    assert "not a signature of this archive" in server.wait_for(
        r"stranger\.lar not deployed.*", timeout=30).group(0)
    archive("signed", signer=key)
    deployed(server, "signed")
    asyncio.run(echoes(server.url("/signed"), "version", "v1"))
    assert not (site.deploy / "signed.lar.sig").exists()
    assert sorted(os.listdir(site.apps)) == ["echo", "signed"]


def test_deploys_are_counted_and_listed_on_the_status_page(tmp_path, reap):
    port = free_port()
    site = Site(tmp_path, admin={"ip": "127.0.0.1", "port": port})
    server = serve(site, reap)
    site.drop("listed.lar", lar_bytes(service_files("listed", "/listed")))
    digest = deployed(server, "listed").group(2)
    site.drop("broken.lar", b"LAR")
    server.wait_for(r"broken\.lar not deployed")
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10).read().decode()
    table = re.search(r'<table id="deployed">(.*?)</table>', page).group(1)
    row = re.search(r'<tr data-service="listed">(.*?)</tr>', table).group(1)
    assert "listed.lar" in row and digest in row
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert b'lapps_deploys_total{result="ok"} 1.0' in scraped
    assert b'lapps_deploys_total{result="refused"} 1.0' in scraped


def test_the_supervisor_deploys_into_every_worker(tmp_path, reap):
    site = Site(tmp_path, workers={"workers": 2})
    server = reap(Supervised(site.config))
    site.drop("both.lar", lar_bytes(service_files("both", "/both")))
    server.wait_event("deploy.done", timeout=30, service="both")
    server.wait_event("config.reloaded", count=2, timeout=30)

    async def every_worker_answers():
        for _ in range(8):  # SO_REUSEPORT spreads the connections over both workers
            await echoes(server.url("/both"), "version", "v1")

    asyncio.run(every_worker_answers())

    # the supervisor cannot see a worker's reload fail: the whole config is checked first
    state = (site.deploy / "deployed.json").read_text()
    site.drop("both.lar", lar_bytes(service_files("both", "/both", "v2",
                                                  lua=FAILS_IN_THE_SERVER)))
    refused = server.wait_event("deploy.refused", timeout=60)
    assert "refuses to run beside a deploy state" in refused["line"]
    assert (site.deploy / "deployed.json").read_text() == state
    assert (site.apps / "both" / "both.lua").read_text() == RECORDER
    asyncio.run(every_worker_answers())
    assert server.stop() == -signal.SIGTERM
    assert [line for line in server.lines if "Traceback" in line] == []


def test_without_inotify_a_poll_finds_archives_once_written(tmp_path):
    clock, found = Clock(), []
    (tmp_path / "old.lar").write_bytes(b"there at start")
    watch = ArchiveWatch(str(tmp_path), found.append, clock, poll_interval=1.0,
                         use_inotify=False)
    watch.start()
    assert found == [str(tmp_path / "old.lar")] and watch.how == "poll"
    (tmp_path / "new.lar").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not an archive")
    clock.advance(1)
    assert len(found) == 1  # still being written, as far as one poll can tell
    clock.advance(1)
    assert found[-1] == str(tmp_path / "new.lar")
    clock.advance(1)
    assert len(found) == 2  # found once
    (tmp_path / "new.lar").write_bytes(b"a new version, longer")
    clock.advance(1)
    clock.advance(1)
    assert found[-1] == str(tmp_path / "new.lar") and len(found) == 3
    watch.stop()


def test_lar_commands_list_verify_and_refuse_in_one_line(tmp_path):
    archive = tmp_path / "tool.lar"
    archive.write_bytes(lar_bytes(service_files("tool", "/tool")))
    listed = subprocess.run(LAPPS + ["lar", "list", str(archive)], capture_output=True,
                            text=True, check=True).stdout
    assert "0644" in listed and "tool/tool.lua" in listed and "tool/tool.json" in listed
    verified = subprocess.run(LAPPS + ["lar", "verify", str(archive)], capture_output=True,
                              text=True, check=True).stdout
    assert verified.startswith(f"{archive}: ok, 2 files in tool/")
    corrupt = tmp_path / "corrupt.lar"
    corrupt.write_bytes(lar_bytes(service_files("tool", "/tool"), digest=b"\1" * 32))
    refused = subprocess.run(LAPPS + ["lar", "verify", str(corrupt)], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == ("lapps lar verify: the header's digest does not match the "
                              "files' digests (corrupt archive)\n")


def test_pack_of_the_current_folder_names_the_archive_after_it(tmp_path):
    folder = tmp_path / "here"
    folder.mkdir()
    for path, content, _ in service_files("here", "/here"):
        (folder / Path(path).name).write_bytes(content)
    for _ in range(2):  # the second run must not pack the first one's archive
        subprocess.run(LAPPS + ["lar", "pack", ".", "-o", "here.lar"], cwd=folder, check=True,
                       capture_output=True)
    listed = subprocess.run(LAPPS + ["lar", "verify", "here.lar"], cwd=folder,
                            capture_output=True, text=True, check=True).stdout
    assert "2 files in here/" in listed


def test_pack_writes_the_layout_of_the_spec(tmp_path):
    """Read back by hand, field by field (§2.4.1), what ``lapps lar pack`` wrote."""
    folder = tmp_path / "svc"
    (folder / "lib").mkdir(parents=True)
    files = {"svc.lua": b"return {}", "svc.json": b'{"name": "svc"}', "lib/util.lua": b"x" * 5000}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (folder / "lib" / "util.lua").chmod(0o640)
    out = tmp_path / "svc.lar"
    subprocess.run(LAPPS + ["lar", "pack", str(folder), "-o", str(out)], check=True,
                   capture_output=True)
    data = out.read_bytes()
    magic, version, toc_size, toc_compressed, items = struct.unpack_from("<3sBIII", data)
    assert (magic, version, items) == (b"LAR", 1, 3)
    toc = bz2.decompress(data[48:48 + toc_compressed])
    assert len(toc) == toc_size
    at, offset, seen, digests = 0, 48 + toc_compressed, {}, b""
    for _ in range(items):
        size, compressed, path_size, mode = struct.unpack_from("<QQII", toc, at)
        digest, path = toc[at + 24:at + 56], toc[at + 56:at + 56 + path_size].decode()
        at += 56 + path_size
        content = bz2.decompress(data[offset:offset + compressed])
        offset += compressed
        assert len(content) == size and hashlib.sha256(content).digest() == digest
        seen[path], digests = (content, mode), digests + digest
    assert at == len(toc) and offset == len(data)
    assert data[16:48] == hashlib.sha256(digests).digest()
    assert seen == {f"svc/{name}": (content, 0o640 if name == "lib/util.lua" else 0o644)
                    for name, content in files.items()}


def test_what_no_step_expected_ends_in_one_line(tmp_path):
    (tmp_path / "odd.lar").write_bytes(b"LAR")

    def running():
        raise RuntimeError("a bug")

    deployer = Deployer(running, None, Clock(), None)
    deployer.running = True
    with capturedLogs() as events:
        finished = deployer.queue(str(tmp_path / "odd.lar"))
    assert finished.called and finished.result is None  # no failure left unhandled
    [event] = [e for e in events if e.get("lapps_event") == "deploy.failed"]
    assert event["error"] == "RuntimeError: a bug" and event["archive"] == "odd.lar"
