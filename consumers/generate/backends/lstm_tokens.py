"""Symbolic music <-> tokens for the LSTM composer (music21).

A score is chordified (sliced at every onset) and each slice becomes one token carrying
its duration in quarter notes, quantised to :data:`DURATIONS`:

- ``n64_0.5``: a single note (MIDI pitch 64, an eighth);
- ``c0.4.7_1.0``: a chord as its sorted pitch classes (a quarter);
- ``r_2.0``: a rest (consecutive rests merge).

Pieces are transposed to C major / A minor first (their key from music21's
Krumhansl-Schmuckler analysis), so the model learns one key per mode; generation
transposes back to the requested key. The vocabulary keeps tokens seen at least
``min_count`` times; the rest map to ``<unk>``.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from beatbus.log import get_logger

from ..errors import InvalidRequest

__all__ = ["DURATIONS", "SPECIALS", "PAD", "UNK", "BOS", "Vocabulary", "tokenize_score", "load_corpus",
           "tokens_to_stream", "key_shift", "quantize_duration", "parse_key"]

log = get_logger("generate.lstm")
DURATIONS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)
_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_TOKEN = re.compile(r"^(n(\d{1,3})|c([\d.]+)|r)_([\d.]+)$")


def quantize_duration(ql: float) -> float | None:
    """Nearest of :data:`DURATIONS` (None for grace notes and ornaments under half a sixteenth)."""
    ql = float(ql)
    if ql < DURATIONS[0] / 2:
        return None
    return min(DURATIONS, key=lambda d: abs(d - ql))


def parse_key(key: str | None) -> tuple[int, str]:
    """``"F# minor"`` -> (6, "minor"); None -> (0, "major")."""
    if not key:
        return 0, "major"
    m = re.match(r"^([A-G])([#b]?) (major|minor)$", key.strip())
    if not m:
        raise InvalidRequest(f"key {key!r} must look like 'A minor' or 'Eb major'")
    pc = (_PC[m.group(1)] + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    return pc, m.group(3)


def key_shift(tonic_pc: int, mode: str) -> int:
    """Semitones from C major / A minor up to ``tonic_pc`` in ``mode``, in -6..5."""
    ref = 0 if mode == "major" else 9
    return (tonic_pc - ref + 6) % 12 - 6


class Vocabulary:
    """Token <-> id with a frequency threshold; ids 0..2 are the specials."""

    def __init__(self, tokens: Iterable[str]):
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, pieces: Iterable[list[str]], *, min_count: int = 2) -> Vocabulary:
        counts = Counter(t for piece in pieces for t in piece)
        return cls(sorted(t for t, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in ids]


def tokenize_score(score, *, normalize_key: bool = True) -> list[str]:
    """Tokens of a music21 score (or stream)."""
    shift = 0
    if normalize_key:
        try:
            k = score.analyze("key")
            shift = -key_shift(k.tonic.pitchClass, k.mode if k.mode in ("major", "minor") else "major")
        except Exception:  # noqa: BLE001 - analysis fails on empty or percussion-only parts: keep the pitches
            shift = 0
    out: list[str] = []
    for el in score.chordify().flatten().notesAndRests:
        d = quantize_duration(el.quarterLength)
        if d is None:
            continue
        if el.isRest:
            if out and out[-1].startswith("r_"):
                prev = float(out[-1][2:])
                out[-1] = f"r_{quantize_duration(prev + d)}"
            else:
                out.append(f"r_{d}")
            continue
        midis = sorted({p.midi + shift for p in el.pitches})
        if not midis:
            continue
        if len(midis) == 1:
            out.append(f"n{min(max(midis[0], 0), 127)}_{d}")
        else:
            pcs = sorted({m % 12 for m in midis})
            out.append(f"c{'.'.join(map(str, pcs))}_{d}" if len(pcs) > 1 else f"n{midis[-1]}_{d}")
    return out


def load_corpus(source: str, *, limit: int | None = None) -> list[list[str]]:
    """Token lists of a corpus: ``"bach"`` (music21's Bach chorales) or a folder of MIDI files.

    Files that do not parse are skipped and logged; an empty result is an error.
    """
    from music21 import converter, corpus

    if source == "bach":
        paths = [p for p in corpus.getComposer("bach") if str(p).endswith((".mxl", ".xml", ".musicxml"))]
    else:
        root = Path(source)
        if not root.is_dir():
            raise InvalidRequest(f"corpus {source!r} is neither 'bach' nor a directory of MIDI files")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    paths = sorted(paths, key=str)[:limit] if limit else sorted(paths, key=str)
    pieces = []
    for p in paths:
        try:
            tokens = tokenize_score(converter.parse(p))
        except Exception as exc:  # noqa: BLE001 - music21 raises many types; one bad file must not end the corpus
            log.warning("corpus file skipped", extra={"file": str(p), "error": str(exc)[:200]})
            continue
        if len(tokens) >= 8:
            pieces.append(tokens)
    if not pieces:
        raise InvalidRequest(f"corpus {source!r} has no usable pieces")
    return pieces


def tokens_to_stream(tokens: Iterable[str], *, tempo: float, meter: int = 4, key: str | None = None,
                     bars: int | None = None):
    """Tokens (in C major / A minor) -> a music21 Stream in ``key`` at ``tempo``.

    With ``bars``, the music is cut (the last event shortened) or padded with a rest to
    exactly ``bars`` bars of ``meter`` quarter notes.
    """
    from music21 import chord, note, stream
    from music21 import key as m21key
    from music21 import meter as m21meter
    from music21 import tempo as m21tempo

    tonic, mode = parse_key(key)
    shift = key_shift(tonic, mode)
    s = stream.Stream()
    s.append(m21tempo.MetronomeMark(number=float(tempo)))
    s.append(m21meter.TimeSignature(f"{meter}/4"))
    names = ("C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B")
    s.append(m21key.Key(names[tonic], mode))
    total = None if bars is None else float(bars * meter)
    t = 0.0
    for tok in tokens:
        m = _TOKEN.match(tok)
        if not m:
            continue
        d = float(m.group(4))
        if total is not None:
            if t >= total:
                break
            d = min(d, total - t)
        if m.group(2) is not None:
            midi = int(m.group(2)) + shift
            while midi < 21:
                midi += 12
            while midi > 108:
                midi -= 12
            el = note.Note(midi, quarterLength=d)
        elif m.group(3) is not None:
            pcs = sorted({(int(p) + shift) % 12 for p in m.group(3).split(".")})
            el = chord.Chord([60 + pc for pc in pcs], quarterLength=d)
        else:
            el = note.Rest(quarterLength=d)
        s.append(el)
        t += d
    if total is not None and t < total:
        s.append(note.Rest(quarterLength=total - t))
    return s
