"""beatbus: a real-time rhythm event pipeline over Redis Streams."""
__version__ = "0.1.0"

from . import threads as _threads

_threads.limit_from_env()     # before anything imports numpy or torch: see beatbus/threads.py
__all__ = ["__version__"]
