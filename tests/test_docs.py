"""The docs build with warnings as errors (``pip install '.[docs]'``), and
the configuration reference they hold is made from the schema: every key
the loader knows is in it."""

import html
import re
import subprocess
import sys

import pytest

from conftest import REPO
from lapps import config
from lapps.schema import Object, walk


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                             "-b", "html", str(REPO / "docs"), str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_docs_build_without_a_warning(built):
    for page in ("index", "getting-started", "services", "configuration", "operations",
                 "scaling", "embedding", "performance", "migrating"):
        assert (built / f"{page}.html").is_file(), page


def _keys(root):
    return [".".join(path) for path, node in walk(root) if not isinstance(node, Object)]


def test_every_config_key_is_in_the_reference(built):
    text = html.unescape(re.sub(r"<[^>]+>", "", (built / "configuration.html").read_text()))
    keys = (_keys(config.SERVER) + _keys(config.SERVICE)
            + [f"directories.{key}" for key in _keys(config.DIRECTORIES)])
    assert len(keys) > 80
    missing = [k for k in keys if not re.search(rf"(?<![\w.]){re.escape(k)}(?![\w.])", text)]
    assert missing == []
    assert "LAppSService" in (built / "embedding.html").read_text()  # the API, from docstrings


def test_the_readme_benchmark_table_is_made_from_the_results_file():
    """Not typed: ``python3 bench/report.py --readme`` writes it from bench/results/."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import report
    finally:
        sys.path.remove(str(REPO / "bench"))
    readme = (REPO / "README.md").read_text()
    assert report.BLOCK.search(readme), "the README has no benchmark block"
    assert report.with_tables(readme) == readme
    assert len(readme.splitlines()) < 200
