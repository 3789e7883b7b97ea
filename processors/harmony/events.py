"""``KeyEvent``, ``ChordEvent`` and ``HarmonyEntry`` live in :mod:`schemas.events`; re-exported here."""
from beatbus.schemas.events import ChordEvent, ChordQuality, HarmonyEntry, KeyEvent, KeyMode

__all__ = ["KeyEvent", "ChordEvent", "KeyMode", "ChordQuality", "HarmonyEntry"]
