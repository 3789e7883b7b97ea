"""Live intensity features and energy-transition / tempo-change detection (no Redis here
except in ``service``).

Public names
------------
IntensityFeatures, IntensityFrame
    Streaming per-hop RMS, K-weighted loudness (BS.1770, short-term and momentary), spectral
    flux, centroid, bass/mids/highs shares and an adaptive 0..1 intensity.
TransitionDetector, TempoChangeDetector, Transition
    Causal build-up / drop / breakdown detection (with drop prediction when bar times are
    known) and tempo-change detection from beat events.
TransitionEvent, IntensityEntry
    The transition event (until it moves into ``schemas``) and the intensity stream's union.
"""
from .events import IntensityEntry, TransitionEvent
from .features import FEATURE_NAMES, IntensityFeatures, IntensityFrame
from .predict import TRANSITION_KINDS, TempoChangeDetector, Transition, TransitionDetector

__all__ = ["IntensityFeatures", "IntensityFrame", "FEATURE_NAMES", "TransitionDetector",
           "TempoChangeDetector", "Transition", "TRANSITION_KINDS", "TransitionEvent", "IntensityEntry"]
