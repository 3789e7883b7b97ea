"""The README's lighter install, `BEATBUS_EXTRAS=audio ./install.sh`, in a copy of the tree: the `dsp` pipeline
runs, and every command that needs another extra says which in one line (a newcomer found this install
failing at its last step, and every command failing with a traceback once that was fixed by hand)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from support.paths import BEATS_DIR, ROOT
from support.procs import cli_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _copy_tree(dest) -> None:
    """The checkout as a fresh clone would have it, uncommitted changes included."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_the_audio_install_runs_the_dsp_pipeline_and_names_the_missing_extra_elsewhere(tmp_path):
    tree = tmp_path / "beatbus"
    _copy_tree(tree)
    env = cli_env({"BEATBUS_EXTRAS": "audio"})
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(["bash", "install.sh"], cwd=tree, env=env, capture_output=True, text=True, timeout=1000)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    beatbus = str(tree / ".venv" / "bin" / "beatbus")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([beatbus, *args], cwd=tree, env=cli_env(), capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    # what the install says to try next
    hint = r.stdout.strip().splitlines()[-1]
    assert hint.startswith("install: done. Try: .venv/bin/beatbus run "), r.stdout
    ok = run(*hint.split(".venv/bin/beatbus ", 1)[1].split())
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr[-2000:]
    assert "120.0 BPM" in ok.stdout and "end of stream" in ok.stdout, ok.stdout[-2000:]

    song = str(BEATS_DIR / "ballroom_media_105901.flac")
    for args, extra in [(["run", "--click", "120", "--duration", "2"], "ml"),        # beatnet, the default backend
                        (["run", "--click", "120", "--duration", "2", "--backend", "dsp",
                          "--error-generator-url", "http://127.0.0.1:9"], "api"),
                        (["api"], "api"), (["worker"], "gen"), (["synth", "songs", str(tmp_path / "s")], "gen"),
                        (["eval", "beats", song, "--backend", "dsp"], "ml")]:
        r = run(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr[-2000:])
        assert lines[-1].startswith("beatbus: error: ") and f"beatbus[{extra}]" in lines[-1], (args, r.stderr)
