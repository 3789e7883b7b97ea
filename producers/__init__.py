"""Audio sources for beatbus: files, live input and a metronome.

Every source is an iterator of :class:`Chunk` (float32 mono at ``sr``, ``hop`` samples,
stamped with ``sample_index`` and ``wall_ns``) with ``sr``, ``hop``, ``stats`` and
``close()``, usable as a context manager. Nothing here talks to the broker: the
publisher (``producers.service``) does.
"""

from __future__ import annotations

from .click import ClickSource, click_times
from .errors import AudioSourceError
from .file import FileSource
from .frames import Chunk, Source
from .mic import MicSource, list_devices

__all__ = ["Chunk", "Source", "FileSource", "ClickSource", "MicSource", "list_devices",
           "click_times", "AudioSourceError", "open_source", "SOURCE_KINDS"]

SOURCE_KINDS = {"file": FileSource, "mic": MicSource, "click": ClickSource}


def open_source(kind: str, **kw) -> Source:
    """Build a source by kind.

    Parameters
    ----------
    kind : {'file', 'mic', 'click'}
    **kw
        The source's own arguments, e.g. ``open_source('file', path='a.wav', loop=True)``,
        ``open_source('mic', device=2)``, ``open_source('click', bpm=128)``.

    Raises
    ------
    ValueError
        Unknown kind or bad parameters.
    AudioSourceError
        The file or device cannot be opened.
    """
    try:
        cls = SOURCE_KINDS[kind]
    except KeyError:
        raise ValueError(f"kind={kind!r} must be one of {', '.join(SOURCE_KINDS)}") from None
    return cls(**kw)
