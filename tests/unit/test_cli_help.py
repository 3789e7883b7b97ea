"""Every command answers --help, and the README's CLI table names every command there is."""
from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from beatbus.cli import build_parser

from support.paths import ROOT


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path below ``parser`` (``("bench", "load")``...), parents first."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(*path, name), *_commands(sub, (*path, name))]
    return out


COMMANDS = _commands(build_parser())


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_answers_help(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*path, "--help"])
    assert stop.value.code == 0 and out.getvalue().startswith("usage: beatbus " + " ".join(path))


def test_the_readme_cli_table_names_every_command_and_benchmark():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("\n## CLI\n"):]
    table = table[:table.index("\n### ")]
    for (top,) in [p for p in COMMANDS if len(p) == 1]:
        assert f"`beatbus {top}" in table or f", `beatbus {top}" in table, f"README CLI table: no `beatbus {top}`"
    row = re.search(r"`beatbus bench ([^`]*)`", table)[1]
    assert set(row.replace("\\|", "|").split("|")) == {p[1] for p in COMMANDS if len(p) == 2 and p[0] == "bench"}, row
