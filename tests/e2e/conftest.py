"""Fixtures of the e2e suite: the deployment (deployment.py), started once, stopped whatever happens."""
from __future__ import annotations

import contextlib

import pytest

from .deployment import EXTRA_LOGS, LAUNCHED, Stack, start_all


@pytest.fixture(scope="package")
def stack(tmp_path_factory) -> Stack:
    with contextlib.ExitStack() as cleanup:
        yield start_all(tmp_path_factory.mktemp("e2e"), cleanup)
    # every daemon drains on SIGTERM and exits 0, leaving no child behind (README: daemon lifecycle)
    problems = [f"{d.describe()}: {d.stop_problem}" for d in LAUNCHED if d.stop_problem]
    if problems:
        pytest.fail("\n".join(problems))


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing e2e test shows how each daemon was started and the end of its stderr."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for d in LAUNCHED:
            report.sections.append((d.describe(), _tail(d.stderr())))
        for name, path in EXTRA_LOGS:
            if path.exists():
                report.sections.append((name, _tail(path.read_text(errors="replace"))))
