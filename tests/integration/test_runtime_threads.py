"""Compute threads (issue #15 item 2): a daemon started as users start it does not spin a core away.

OpenBLAS starts a thread per core and the idle ones spin in ``sched_yield``: `beatbus run --click
120` took 98 % of a core for one source on an idle machine; with one thread per pool 15-18 %.
Every process now sets its pools at start (``threads``, default 1; an explicit
``OPENBLAS_NUM_THREADS`` wins), so the budget below holds in the default environment and fails
with the pools left at one thread per core (``BEATBUS_THREADS=0``, or ``OPENBLAS_NUM_THREADS=2
OMP_NUM_THREADS=2``: 29-35 % even at a load average of 10 on 2 cores, where spinning threads get
the least CPU; the budget never fails the fixed pipeline, whatever the load).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from support.daemons import Daemon, daemon_env
from support.paths import ROOT
from support.procs import wait_for

# share of one core for the whole `run` pipeline of one source: measured 18 % for producer, processor and
# terminal, 27-28 % since it runs the intensity and sections stages too; spinning BLAS pools took 116 %
BUDGET = 0.35
WINDOW_S = 10.0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_run_click_stays_under_a_cpu_budget_in_the_default_environment(tmp_path):
    run = Daemon("run", ["run", "--click", "120", "--duration", "60"], env=daemon_env(), workdir=tmp_path).start()
    try:
        beats = lambda: run.stdout_path.read_text().count("BPM")            # noqa: E731
        assert wait_for(lambda: beats() >= 4 or not run.alive(), 90), run.stderr()[-2000:]
        assert run.alive(), run.stderr()[-2000:]
        start, cpu0 = time.monotonic(), _cpu_seconds(run.pid)
        time.sleep(WINDOW_S)
        share = (_cpu_seconds(run.pid) - cpu0) / (time.monotonic() - start)
        assert run.alive() and beats() >= 4 + 2 * WINDOW_S - 4, "the pipeline stalled"
        assert share < BUDGET, f"`beatbus run --click 120` used {share:.0%} of a core (budget {BUDGET:.0%})"
    finally:
        run.stop()


PROBE = """
import sys
from beatbus.cli import build_parser
from beatbus.commands import cli_settings
cli_settings(build_parser().parse_args(["consume", "terminal", *sys.argv[1:]]))
import threadpoolctl, torch
blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
print(blas[0], torch.get_num_threads())
"""


def _pools(tmp_path, *args: str, **env: str) -> str:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], env=daemon_env(**env), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()


def test_threads_setting_sizes_blas_and_torch_pools_and_an_explicit_variable_wins(tmp_path):
    assert _pools(tmp_path) == ["1", "1"]                                  # the default: one each
    assert _pools(tmp_path, BEATBUS_THREADS="2") == ["2", "2"]
    toml = tmp_path / "beatbus.toml"
    toml.write_text("threads = 2\n")                                       # read after numpy loaded: resized
    assert _pools(tmp_path, "--config", str(toml)) == ["2", "2"]
    assert _pools(tmp_path, OPENBLAS_NUM_THREADS="2") == ["2", "1"]        # the user's own variable wins
