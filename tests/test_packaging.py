"""Installing lapps into a fresh virtual environment, as a user would: the
twistd plugin and the ``lapps`` command work from site-packages, and again
after an editable install of the same tree."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What an in-tree build may leave in the repo (all ignored by git).
BUILD_ARTEFACTS = ("build", "dist", "lapps.egg-info")
PLUGIN_LINE = re.compile(r"^\s+lapps\s+A WebSocket application server", re.M)


def clean_env():
    """The caller's environment without anything that could put the source
    tree (or another environment) on the interpreter's path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
                        "VIRTUAL_ENV", "PYTHONSAFEPATH", "PYTHONNOUSERSITE")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def run(argv, cwd, timeout=600):
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{result.stdout}"
    return result.stdout


@pytest.fixture
def no_build_litter():
    """Remove what ``pip install REPO`` builds in the tree, unless it was
    there before the test."""
    present = {name for name in BUILD_ARTEFACTS if (REPO / name).exists()}
    yield
    for name in BUILD_ARTEFACTS:
        if name not in present:
            shutil.rmtree(REPO / name, ignore_errors=True)


def repo_files():
    """The files a wheel of lapps should carry, relative to the repo."""
    files = {str(p.relative_to(REPO)) for p in (REPO / "lapps").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts
             and not p.name.startswith(".") and not p.name.endswith("~")}
    return files | {"twisted/plugins/lapps_plugin.py"}


def test_venv_install_then_editable_install(tmp_path, no_build_litter):
    venv = tmp_path / "venv"
    bin_ = venv / "bin"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    site = Path(run([bin_ / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    cwd=tmp_path).strip())

    # 1. A regular install from the source tree.
    run([bin_ / "python", "-m", "pip", "install", REPO], cwd=tmp_path)
    assert PLUGIN_LINE.search(run([bin_ / "twistd", "--help"], cwd=tmp_path))
    where = run([bin_ / "python", "-c",
                 "import lapps, twisted.plugins.lapps_plugin as p, sys\n"
                 "print(lapps.__file__); print(p.__file__); print(repr(sys.path))"],
                cwd=tmp_path).splitlines()
    assert Path(where[0]).is_relative_to(site), where
    assert Path(where[1]) == site / "twisted" / "plugins" / "lapps_plugin.py", where
    assert str(REPO) not in where[2], where

    # The wheel holds lapps/ and the plugin module, and nothing else of the
    # tree: no twisted/__init__.py over Twisted's own, no tests/ or etc/.
    record = next(site.glob("lapps-*.dist-info")) / "RECORD"
    installed = {line.split(",")[0] for line in record.read_text().splitlines()}
    installed = {f for f in installed
                 if not f.startswith(("lapps-", "../")) and "__pycache__" not in f}
    assert installed == repo_files()

    checked = run([bin_ / "lapps", "check", REPO / "etc" / "lapps-ws.json"], cwd=tmp_path)
    assert f"{REPO / 'etc' / 'lapps-ws.json'}: ok" in checked.splitlines()

    # 2. An editable install of the same tree, over it.
    run([bin_ / "python", "-m", "pip", "install", "-e", REPO], cwd=tmp_path)
    assert not (site / "twisted" / "plugins" / "lapps_plugin.py").exists()
    where = run([bin_ / "python", "-c",
                 "import lapps, twisted.plugins.lapps_plugin as p\n"
                 "print(lapps.__file__); print(p.__file__)"], cwd=tmp_path).splitlines()
    assert Path(where[0]) == REPO / "lapps" / "__init__.py", where
    assert Path(where[1]) == REPO / "twisted" / "plugins" / "lapps_plugin.py", where
    assert PLUGIN_LINE.search(run([bin_ / "twistd", "--help"], cwd=tmp_path))
    checked = run([bin_ / "lapps", "check", REPO / "etc" / "lapps-ws.json"], cwd=tmp_path)
    assert f"{REPO / 'etc' / 'lapps-ws.json'}: ok" in checked.splitlines()
