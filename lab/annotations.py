"""Beat annotations beside audio files: one reader for evaluation and training.

Formats (the annotation of ``<name>.<audio>`` is the first of ``<name>.beats``, ``<name>.jams``,
``<name>.txt`` that exists):

* ``.beats`` (ours) and ``.txt`` (mirdata-style): one beat per line, ``time`` alone or ``time`` and
  ``beat_in_bar`` (1 = downbeat) separated by a tab, spaces or a comma; ``#`` starts a comment line.
  A ``# keep START END`` line (seconds) marks a stretch whose beats are trusted; a file with such lines
  is annotated only there (what ``beatbus label beats`` writes for pseudo-labels; ``# keep none``: nowhere),
  one without any is annotated throughout.
* ``.jams``: the first annotation of namespace ``beat`` (its numeric ``value`` is the position in
  the bar when every value is a positive integer) or ``beat_position`` (``value["position"]``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError

__all__ = ["AUDIO_EXTS", "ANNOTATION_EXTS", "Annotations", "read_annotations", "annotation_path", "annotated_audio",
           "write_beats"]

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
ANNOTATION_EXTS = (".beats", ".jams", ".txt")
_KEEP = re.compile(r"#\s*keep\s+(?:(none)|([-+\d.eE]+)\s+([-+\d.eE]+))\s*$")  # other comments are ignored


@dataclass(frozen=True)
class Annotations:
    """Beats of one recording.

    Attributes
    ----------
    times : np.ndarray [shape=(n,)]
        Beat times in seconds.
    beat_in_bar : np.ndarray [shape=(n,), dtype=int] or None
        Bar positions (1 = downbeat); None when the file has none.
    keep : tuple of (float, float) or None
        ``(start, end)`` seconds of the annotated stretches; None: the whole recording.
    """

    times: np.ndarray
    beat_in_bar: np.ndarray | None
    keep: tuple[tuple[float, float], ...] | None = None


def annotation_path(audio: str | Path) -> Path | None:
    """The annotation file of ``audio`` (see the module docstring), None when there is none."""
    audio = Path(audio)
    return next((audio.with_suffix(e) for e in ANNOTATION_EXTS if audio.with_suffix(e).is_file()), None)


def annotated_audio(folder: str | Path) -> list[Path]:
    """The audio files of ``folder`` (not its subfolders) that have an annotation, by name; of two
    recordings with one stem, the first in :data:`AUDIO_EXTS` order."""
    folder = Path(folder)
    out = []
    for stem in sorted({p.stem for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTS}):
        audio = next((folder / (stem + e) for e in AUDIO_EXTS if (folder / (stem + e)).is_file()), None)
        if audio is not None and annotation_path(audio) is not None:
            out.append(audio)
    return out


def read_annotations(path: str | Path) -> Annotations:
    """Read a ``.beats``, ``.txt`` or ``.jams`` file (see the module docstring).

    Raises
    ------
    ConfigError
        Naming the file, when it cannot be read or its lines / JSON are not one of the formats.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read annotations ({getattr(exc, 'strerror', None) or exc})") from None
    if path.suffix.lower() == ".jams":
        return _read_jams(path, text)
    keep, rows, nowhere = [], [], False
    bad = ConfigError(f"{path}: every line must be 'time' or 'time<TAB>beat_in_bar'")
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            m = _KEEP.match(s)
            if m and m.group(1):
                nowhere = True
            elif m:
                try:
                    keep.append((float(m.group(2)), float(m.group(3))))
                except ValueError:
                    raise ConfigError(f"{path}: '{s}' must be '# keep START END' in seconds") from None
        elif s:
            rows.append(s.replace(",", " ").split())
    kept = tuple(keep) if keep or nowhere else None
    if not rows:
        return Annotations(np.zeros(0), None, kept)
    if len({len(r) for r in rows}) != 1 or len(rows[0]) not in (1, 2):
        raise bad
    try:
        arr = np.array(rows, dtype=float)
    except ValueError:
        raise bad from None
    bar = None
    if arr.shape[1] == 2:
        if not np.all(arr[:, 1] == np.round(arr[:, 1])):  # e.g. "1.2" bar.beat: not a position in the bar
            raise bad
        bar = arr[:, 1].astype(int)
    return Annotations(arr[:, 0], bar, kept)


def _read_jams(path: Path, text: str) -> Annotations:
    try:
        doc = json.loads(text)
        ann = next(a for a in doc.get("annotations", []) if a.get("namespace") in ("beat", "beat_position"))
    except (json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{path}: not a JAMS file (JSON with an 'annotations' list)") from None
    except StopIteration:
        raise ConfigError(f"{path}: no annotation of namespace 'beat' or 'beat_position'") from None
    data = ann.get("data", [])
    if isinstance(data, dict):  # JAMS < 0.2 stored columns: {"time": [...], "value": [...]}
        data = [dict(zip(data, vals)) for vals in zip(*data.values())]
    try:
        obs = sorted(data, key=lambda o: float(o["time"]))
        times = np.array([float(o["time"]) for o in obs])
        if ann["namespace"] == "beat_position":
            pos = [o["value"]["position"] for o in obs]
        else:
            pos = [o.get("value") for o in obs]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: every observation needs a numeric 'time' (and a 'position' value for "
                          "beat_position)") from None
    ok = bool(pos) and all(isinstance(p, (int, float)) and p >= 1 and float(p).is_integer() for p in pos)
    return Annotations(times, np.array(pos, dtype=int) if ok else None)


def write_beats(path: str | Path, times: Sequence[float], beat_in_bar: Sequence[int] | None = None, *,
                keep: Sequence[tuple[float, float]] | None = None, comment: str | None = None) -> Path:
    """Write a ``.beats`` file (``# keep`` lines first when ``keep`` is given) and return its path."""
    path = Path(path)
    lines = [f"# {c}" for c in (comment.splitlines() if comment else [])]
    if keep is not None:
        lines += [f"# keep {a:.3f} {b:.3f}" for a, b in keep] or ["# keep none"]
    if beat_in_bar is None:
        lines += [f"{t:.3f}" for t in times]
    else:
        lines += [f"{t:.3f}\t{int(b)}" for t, b in zip(times, beat_in_bar)]
    path.write_text("\n".join(lines) + "\n")
    return path
