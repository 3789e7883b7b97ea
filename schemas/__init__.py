"""beatbus event schemas and their wire codec."""
from .codec import decode, encode, float_to_pcm, from_fields, pcm_to_float, to_fields
from .events import *  # noqa: F401,F403
from .events import __all__ as _events_all

__all__ = [*_events_all, "encode", "decode", "to_fields", "from_fields", "pcm_to_float", "float_to_pcm"]
