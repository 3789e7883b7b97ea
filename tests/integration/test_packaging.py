"""What `pip install` puts into site-packages: one import root, every stage inside it.

The repository keeps the stage folders at its top (producers/, processors/, ...); setuptools maps
them into ``beatbus.*`` (pyproject ``package-dir``). A wheel built from the checkout is inspected
as pip would install it.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from support.paths import ROOT

STAGE_FOLDERS = ("api", "consumers", "deploy", "hls", "lab", "processors", "producers", "schemas")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = out.glob("beatbus-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_only_beatbus(wheel):
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"beatbus"}
    for folder in STAGE_FOLDERS:
        assert f"beatbus/{folder}/__init__.py" in wheel.namelist(), folder


def test_every_package_folder_of_the_checkout_is_in_the_wheel(wheel):
    """A new subpackage left out of pyproject's ``packages`` would be missing from installs."""
    names = set(wheel.namelist())
    for init in [ROOT / "beatbus" / "__init__.py", *(p for f in STAGE_FOLDERS for p in (ROOT / f).rglob("__init__.py"))]:
        rel = init.relative_to(ROOT)
        installed = rel.as_posix() if rel.parts[0] == "beatbus" else f"beatbus/{rel.as_posix()}"
        assert installed in names, f"{rel} is not packaged: add it to pyproject's packages"


def test_data_files_and_the_hls_plugin_ship(wheel):
    names = set(wheel.namelist())
    for data in ("beatbus/schemas/json/BeatEvent.schema.json", "beatbus/api/static/index.html",
                 "beatbus/deploy/prometheus/beatbus.rules.yml", "beatbus/hls/config.yaml"):
        assert data in names, data
    (eps,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(eps).decode()
    assert "[beatbus.beat_backends]" in text and "hls = beatbus.hls.backend:factory" in text


def test_no_generic_top_level_package_is_importable(tmp_path):
    """Outside the checkout, `import api` (or schemas, deploy...) finds nothing of ours."""
    code = ("import importlib.util, sys\n"
            f"hits = [n for n in {STAGE_FOLDERS!r} if importlib.util.find_spec(n)]\n"
            "import beatbus.api, beatbus.schemas, beatbus.processors.beat\n"
            "sys.exit(f'importable at top level: {hits}' if hits else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
