"""Standalone services: init/run in their own thread, must_stop, instance_id,
depends order, orderly stop, and a thread that does not stop."""

import re

from conftest import TEST_APPS, write_config


def standalone(**extra):
    return {"standalone": True, "auto_start": True, "instances": 1, "preload": ["nap", "time"],
            **extra}


def test_lifecycle_must_stop_and_instance_id(start_server):
    server = start_server({"ticker": standalone(instances=2)}, applications=TEST_APPS)
    inits = [server.wait_for(r"ticker init (\w+) (\d+) ws=(\w+) bcast=(\w+) nap=(\w+) time=(\w+)",
                             count=n) for n in (1, 2)]
    for m in inits:
        assert m.group(1) == "string" and m.group(3) == "nil"
        assert (m.group(4), m.group(5), m.group(6)) == ("table", "table", "table")
    assert inits[0].group(2) != inits[1].group(2)
    server.stop()
    ids = sorted(m.group(2) for m in inits)
    stopped = sorted(re.search(r"ticker stopped (\d+) after [01] nap", l).group(1)
                     for l in server.lines if "ticker stopped" in l)
    assert stopped == ids, "\n".join(server.lines)
    assert server.count("did not stop") == 0


def test_depends_start_first_recursively_and_stop_last(start_server):
    server = start_server({
        "first": standalone(depends=["second"]),
        "second": standalone(auto_start=False, depends=["third", "nowhere"]),
        "third": standalone(auto_start=False),
    }, applications=TEST_APPS)
    server.wait_for("init first")
    server.stop()
    starts = [l for l in server.lines if l.startswith("init ")]
    stops = [l for l in server.lines if l.startswith("stop ")]
    assert starts == ["init third", "init second", "init first"]
    assert stops == ["stop first", "stop second", "stop third"]
    assert server.count(r"depends on nowhere, which has no descriptor; ignored") == 1


def test_a_dependency_cycle_is_a_config_error(tmp_path):
    import subprocess, sys
    from pathlib import Path
    config = write_config(tmp_path, {"first": standalone(depends=["second"]),
                                     "second": standalone(depends=["first"])},
                          applications=TEST_APPS)
    result = subprocess.run([str(Path(sys.executable).parent / "lapps"), "check", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout == f"{config}: /services/first/depends: dependency cycle first -> second -> first\n"


def test_a_thread_that_does_not_stop_is_reported_by_name(start_server):
    server = start_server({"stuck": standalone(stop_timeout=0.5), "ticker": standalone()},
                          applications=TEST_APPS)
    server.wait_for("stuck init")
    server.wait_for("ticker init")
    server.stop()
    assert server.count(r"standalone instance stuck\[0\] did not stop within 0.5 s") == 1, \
        "\n".join(server.lines)
    assert server.count(r"ticker stopped") == 1
    assert server.count(r"did not stop") == 1
