"""The terminal consumer: beats printed as they arrive (``beatbus consume terminal``, ``beatbus run``)."""
from .service import TerminalConsumer

__all__ = ["TerminalConsumer"]
