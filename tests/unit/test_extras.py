"""The map from import names to extras (beatbus.errors.EXTRA_OF) matches pyproject.toml's extras."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import packages_distributions

from beatbus.errors import EXTRA_OF, DependencyError, missing_extra

from support.paths import ROOT

SKIP = {"all", "dev"}          # the union, and the tools that never run inside a command


def _extras() -> dict[str, set[str]]:
    """extra -> its distributions' normalised names."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    def dists(req: str) -> set[str]:            # "hls4ml[qkeras]==1.3.0": hls4ml, and qkeras through it
        m = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^]]*)\])?", req)
        return {n.strip().lower().replace("_", "-") for n in [m[1], *(m[2] or "").split(",")] if n.strip()}

    return {name: set().union(*map(dists, reqs)) for name, reqs in extras.items() if name not in SKIP}


def test_every_package_of_an_extra_is_mapped_to_it_and_nothing_else():
    extras = _extras()
    provides = packages_distributions()            # import name -> distributions (the full install)
    for module, extra in EXTRA_OF.items():
        dists = {d.lower().replace("_", "-") for d in provides.get(module, [])}
        assert dists & extras[extra], f"{module}: installed by {dists}, not by the extra {extra}"
    mapped = {d.lower().replace("_", "-") for m in EXTRA_OF for d in provides.get(m, [])}
    for extra, dists in extras.items():
        assert dists <= mapped, f"extra {extra}: no import name mapped for {sorted(dists - mapped)}"


def test_a_missing_optional_package_is_one_line_naming_its_extra_and_anything_else_is_a_bug():
    err = missing_extra(ModuleNotFoundError("No module named 'fastapi'", name="fastapi"))
    assert isinstance(err, DependencyError) and "pip install 'beatbus[api]'" in str(err) and "\n" not in str(err)
    assert "beatbus[gen]" in str(missing_extra(ModuleNotFoundError(name="music21.stream")))
    assert missing_extra(ModuleNotFoundError(name="beatbus.nothing")) is None
    own = DependencyError("backend 'beatnet' needs torch")
    assert missing_extra(own) is own
