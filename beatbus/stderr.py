"""Silence C libraries that print straight to file descriptor 2."""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["quiet_stderr"]


@contextlib.contextmanager
def quiet_stderr():
    """Send fd 2 to /dev/null for the duration of the block.

    ALSA, JACK and libmpg123 print probing noise ("ALSA lib pcm.c: Unknown PCM
    cards.pcm.rear", "jack server is not running", "Illegal Audio-MPEG-Header") from C
    straight to fd 2, where Python cannot filter it; a user would take it for errors next
    to our own one-line message. The redirect is process-wide, so it is only used around
    rare calls (opening a file or a device, never per read), where losing another thread's
    log line is unlikely. Set ``BEATBUS_AUDIO_DEBUG=1`` to see the noise.
    """
    if os.environ.get("BEATBUS_AUDIO_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
