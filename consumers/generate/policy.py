"""When the stream asks for new music: the generation policy, per source (no I/O).

Policies (``generate.policy``):

- ``section``: a section whose label is in ``section_labels`` (chorus, bridge by default)
  becomes *confirmed* (or is revised into one of them): one trigger per section start;
- ``bars``: every ``every_bars`` bars, on the downbeat of bars 0, N, 2N ... of the stream
  (so two instances agree on where the boundaries are);
- ``api``: never from the stream; jobs come from the API or the CLI only.

The policy also tracks the conditioning the stream offers (tempo, meter, intensity,
section), which :class:`~consumers.generate.service.GenerationService` turns into a job.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from beatbus.schemas import BeatEvent, IntensityEvent, KeyEvent, SectionEvent

from .conditioning import Conditioning, key_name

__all__ = ["Trigger", "GenerationPolicy", "SourceState"]


@dataclass(frozen=True)
class Trigger:
    """A decision to queue a job: which source, why, and the stream time it refers to."""
    source: str
    reason: str          # "section" | "bars"
    detail: str          # the section label, or the bar number
    at: float            # stream seconds


@dataclass
class SourceState:
    tempo: float | None = None
    meter: int | None = None
    intensity: float | None = None
    section: str | None = None
    bar: int = -1
    intensity_stream: bool = False      # an intensity processor runs: its value wins over the beat's
    key: str | None = None              # the harmony stage's live key ("A minor")
    key_confidence: float | None = None
    fired_sections: set[float] = field(default_factory=set)
    fired_bar: int = -1


class GenerationPolicy:
    """Feed it a source's events; it answers with a :class:`Trigger` when one is due.

    Parameters
    ----------
    mode : {"section", "bars", "api"}
    labels : sequence of str
        Section labels that trigger under ``section``.
    every_bars : int
        Bars between triggers under ``bars``.
    """

    def __init__(self, *, mode: str, labels=("chorus", "bridge"), every_bars: int = 16):
        if mode not in ("section", "bars", "api"):
            raise ValueError(f"policy {mode!r} is not one of section, bars, api")
        self.mode, self.labels, self.every_bars = mode, frozenset(labels), max(1, int(every_bars))
        self.sources: dict[str, SourceState] = {}

    def _state(self, source: str) -> SourceState:
        return self.sources.setdefault(source, SourceState())

    def on_beat(self, ev: BeatEvent) -> Trigger | None:
        st = self._state(ev.source)
        if ev.bpm > 0:
            st.tempo = ev.bpm
        st.meter = ev.meter
        if ev.intensity is not None and not st.intensity_stream:
            st.intensity = ev.intensity
        st.bar = ev.bar
        if (self.mode == "bars" and ev.is_downbeat and ev.bar > 0 and ev.bar % self.every_bars == 0
                and ev.bar != st.fired_bar):
            st.fired_bar = ev.bar
            return Trigger(ev.source, "bars", str(ev.bar), ev.timestamp)
        return None

    def on_intensity(self, ev: IntensityEvent) -> None:
        st = self._state(ev.source)
        st.intensity, st.intensity_stream = ev.intensity, True

    def on_key(self, ev: KeyEvent) -> None:
        st = self._state(ev.source)
        st.key, st.key_confidence = key_name(ev), ev.confidence

    def on_section(self, ev: SectionEvent) -> Trigger | None:
        st = self._state(ev.source)
        st.section = ev.label
        if self.mode != "section" or ev.status == "tentative" or ev.label not in self.labels:
            return None
        start = round(ev.start, 2)
        if start in st.fired_sections:
            return None
        st.fired_sections.add(start)
        if len(st.fired_sections) > 256:        # bounded memory for endless streams
            st.fired_sections = set(sorted(st.fired_sections)[-128:])
        return Trigger(ev.source, "section", ev.label, ev.start)

    def conditioning(self, source: str) -> Conditioning:
        st = self._state(source)
        return Conditioning(source=source, tempo=st.tempo, meter=st.meter, section=st.section,
                            intensity=st.intensity, key=st.key, key_confidence=st.key_confidence)
