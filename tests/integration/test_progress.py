"""Long commands show progress on a terminal (stderr) and nothing in a pipe, so stdout stays machine-readable."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beatbus.progress import Progress, track

from support.paths import DATA, ROOT


@pytest.fixture(scope="module")
def silence(tmp_path_factory) -> Path:
    """Two minutes of silence: the kind of file that ran for a long time without a word."""
    path = tmp_path_factory.mktemp("progress") / "silence.wav"
    sf.write(path, np.zeros(22050 * 120, dtype=np.float32), 22050)
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATBUS_") and k != "REDIS_URL"}
    env["TERM"] = "xterm"
    return env


def run_with_terminal_stderr(*args: str, timeout: float = 180) -> tuple[int, str, bytes]:
    """The real CLI with stderr on a pseudo-terminal (as in a shell) and stdout on a pipe (``| jq``)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))      # a 200-column window
    proc = subprocess.Popen([sys.executable, "-m", "beatbus.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=_env(), cwd=ROOT)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:               # EIO: the child closed its side
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode()
        rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        proc.stdout.close()
    return rc, out, seen


def test_analyze_shows_progress_on_a_terminal(silence):
    rc, out, err = run_with_terminal_stderr("analyze", str(silence), "--json", "--backend", "dsp")
    assert rc == 0, err[-500:]
    assert json.loads(out) == {"tempo": 0.0, "meter": None, "tempo_curve": [], "beats": []}  # stdout: only the JSON
    lines = [ln for ln in err.decode().split("\r\x1b[K") if ln.strip()]
    assert len(lines) >= 3, err[-500:]                               # it moves, not one final line
    assert all(ln.startswith(f"analyze {silence}") for ln in lines), lines[:3]
    assert "s of audio" in lines[-1] and "%" in lines[-1] and "/120 s of audio" in lines[-1]
    percents = [int(ln.split("%")[0].split()[-1]) for ln in lines]
    assert percents == sorted(percents) and percents[-1] >= 50
    assert err.endswith(b"\r\x1b[K")                                 # erased at the end: clean prompt


def test_analyze_in_a_pipe_prints_no_progress_and_the_json_parses(silence):
    r = subprocess.run([sys.executable, "-m", "beatbus.cli", "analyze", str(silence), "--json", "--backend", "dsp"],
                       capture_output=True, env=_env(), cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"tempo": 0.0, "meter": None, "tempo_curve": [], "beats": []}
    assert b"\r" not in r.stderr and b"\x1b" not in r.stderr and b"analyze" not in r.stderr, r.stderr


def test_eval_shows_which_file_on_a_terminal():
    rc, out, err = run_with_terminal_stderr("eval", "beats", str(DATA / "beats" / "madmom_sample.flac"),
                                            "--backend", "dsp")
    assert rc == 0, err[-500:]
    assert "| madmom_sample |" in out and "\x1b" not in out
    assert b"eval beats" in err and b"dsp: madmom_sample.flac" in err and b"files" in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_writes_only_to_a_terminal_and_erases_its_line(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    pipe = io.StringIO()
    with Progress("work", 10, "files", stream=pipe) as bar:
        bar.update(5)
    assert pipe.getvalue() == ""
    term = _Terminal()
    with Progress("work", 10, "files", stream=term, interval=0) as bar:
        bar.update(5, note="half")
        assert "work   50%  5/10 files" in bar.line() and bar.line().endswith("half")
    assert term.getvalue().startswith("\r\x1b[Kwork   50%") and term.getvalue().endswith("\r\x1b[K")
    assert list(track([1, 2, 3], "items")) == [1, 2, 3]
