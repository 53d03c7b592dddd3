import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Keep the embedded tiny checkpoint and caches of a test run out of the user's home."""
    home = tmp_path_factory.mktemp("ernie_vl_home")
    old = os.environ.get("ERNIE_VL_HOME")
    os.environ["ERNIE_VL_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("ERNIE_VL_HOME", None)
    else:
        os.environ["ERNIE_VL_HOME"] = old


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from ernie_vl.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """A skipped test is not a passing one: a run with skips fails (set ERNIE_VL_ALLOW_SKIPS=1 to run a subset)."""
    if _skipped and exitstatus == 0 and not os.environ.get("ERNIE_VL_ALLOW_SKIPS"):
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"{len(_skipped)} test(s) skipped, which this suite counts as failures: {_skipped[:5]}",
                          red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
