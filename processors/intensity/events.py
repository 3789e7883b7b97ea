"""``TransitionEvent`` and ``IntensityEntry`` live in :mod:`schemas.events`; re-exported here."""
from beatbus.schemas.events import IntensityEntry, TransitionEvent, TransitionKind

__all__ = ["TransitionEvent", "TransitionKind", "IntensityEntry"]
