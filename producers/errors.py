"""Errors raised by the audio sources.

``AudioSourceError`` is a user-facing error: its message is one line that names the
path or device and the cause, so the CLI can print it without a traceback. It is the
one class of beatbus's error tree (``beatbus.errors``), re-exported here.
"""

from beatbus.errors import AudioSourceError

__all__ = ["AudioSourceError"]
