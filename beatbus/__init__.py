"""beatbus: a real-time rhythm event pipeline over Redis Streams."""
__version__ = "0.1.0"
__all__ = ["__version__"]
