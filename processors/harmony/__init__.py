"""Live key and chords: beat-synchronous chroma, a causal chord HMM, a key posterior and the next
chord change on the bar grid (no Redis here except in ``service``).

Public names
------------
ChromaFrames, beat_sync
    Streaming STFT chroma (librosa's filterbank) per 20 ms hop and its means between beats.
ChordHMM, KeyEstimator
    Forward filter over 24 major/minor triads + no chord; key posterior from Krumhansl-Kessler
    profiles and the chords heard.
HarmonicRhythm
    How often and where in the bar chords change; the next change's beat.
OnlineHarmony, ChordUpdate, KeyUpdate
    The whole analysis of one stream, with hysteresis and a bounded event rate.
KeyEvent, ChordEvent, HarmonyEntry
    The events (in ``schemas``) and the harmony stream's union.
"""
from .chords import ChordHMM, KeyEstimator, chord_name, key_name
from .events import ChordEvent, HarmonyEntry, KeyEvent
from .features import ChromaFrames, beat_sync
from .online import ChordUpdate, KeyUpdate, OnlineHarmony
from .predict import HarmonicRhythm

__all__ = ["ChromaFrames", "beat_sync", "ChordHMM", "KeyEstimator", "chord_name", "key_name", "HarmonicRhythm",
           "OnlineHarmony", "ChordUpdate", "KeyUpdate", "KeyEvent", "ChordEvent", "HarmonyEntry"]
