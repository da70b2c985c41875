"""What tests/test_autobahn.py does where the conformance tool is missing:
each test is skipped with a reason that names the path looked for and how
to provide the tool, and in CI (``CI`` set, and not to "0" or "false") each
fails with that message instead, rather than an IndexError on the tool's
missing output. Run in a pytest of its own with LAPPS_SHARED on an empty
folder: no server starts and no conformance case runs."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from support.conformance import in_ci


def pytest_without_the_tool(shared, ci):
    """tests/test_autobahn.py run by pytest with LAPPS_SHARED=``shared`` and
    CI=``ci`` (None: unset): its exit code and output."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(LAPPS_SHARED=str(shared), COLUMNS="1000")  # (summary lines not cut)
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider",
                             "tests/test_autobahn.py"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("ci, code, outcome", [(None, 0, "skipped"), ("true", 1, "failed")],
                         ids=["locally", "in_ci"])
def test_a_missing_tool_skips_locally_and_fails_in_ci(tmp_path, ci, code, outcome):
    returncode, output = pytest_without_the_tool(tmp_path, ci)
    assert returncode == code, output
    summary = output.strip().splitlines()[-1]
    assert re.fullmatch(rf"=* ?\d+ {outcome} in [\d.]+s ?=*", summary), output
    tool = tmp_path / "tools" / "autobahn-conformance"
    reason = (f"Autobahn conformance tool not found: looked for {tool} "
              f"($LAPPS_SHARED/tools/autobahn-conformance, with LAPPS_SHARED set to {tmp_path}); "
              f"provide it by putting the shared tools (tools/autobahn-conformance) in "
              f"{tmp_path}, or by setting LAPPS_SHARED to a folder that holds "
              f"tools/autobahn-conformance")
    assert reason in output
    assert ("SKIPPED" if ci is None else "FAILED") in output
    assert "IndexError" not in output and "Traceback" not in output


@pytest.mark.parametrize("value, ci", [(None, False), ("", False), ("0", False), ("false", False),
                                       ("False", False), ("true", True), ("1", True),
                                       ("yes", True)])
def test_ci_is_any_value_but_empty_0_or_false(value, ci):
    assert in_ci({} if value is None else {"CI": value}) is ci
