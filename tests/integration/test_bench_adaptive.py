"""`beatbus bench load --adaptive both`: one row with the processor's adaptive quality on, one off."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.paths import ROOT
from support.procs import beatbus_cmd, cli_env, eventually


def test_bench_load_runs_each_count_with_and_without_adaptation_and_reports_the_levels(tmp_path):
    out = tmp_path / "load.json"
    r = beatbus_cmd("bench", "load", "--sources", "2", "--duration", "4", "--warmup", "3", "--adaptive", "both",
                    "--json", str(out), timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| keeps up | adaptive | sources per level at the end (beatnet, small, dsp, dsp-4/4) |" in r.stdout
    assert "quality levels at the end (sources): 2 at 0 (beatnet), 0 at 1 (small), 0 at 2 (dsp), 0 at 3 (dsp-4/4)" \
        in r.stdout
    on, off = json.loads(out.read_text())
    assert (on["adaptive"], off["adaptive"]) == (True, False)
    # two sources are far from loading a processor: nothing degrades
    assert on["quality_levels"] == off["quality_levels"] == [2, 0, 0, 0]
    assert on["beats"] > 0 and off["beats"] > 0


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of the processes whose parent is ``pid`` (read from /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_bench_takes_its_daemons_and_load_generator_with_it():
    """SIGKILL leaves the bench no time to stop anything: its children must still go (an orphaned load
    generator once kept publishing audio after the bench was killed)."""
    bench = subprocess.Popen([sys.executable, "-m", "beatbus.cli", "bench", "load", "--sources", "2", "--duration", "60",
                              "--warmup", "60", "--backend", "dsp"], cwd=ROOT, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kids = eventually(lambda: (k := _children(bench.pid)) and any("loadgen" in c for c in k.values())
                          and any(" process" in c for c in k.values()) and k, 120, what="the processor and the loadgen",
                          interval=0.5)
    finally:
        bench.kill()
        bench.wait()
    eventually(lambda: not any(_alive(p) for p in kids), 20,
               what=lambda: f"the bench's children to exit: {[c for p, c in kids.items() if _alive(p)]}")
