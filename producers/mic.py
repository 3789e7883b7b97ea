"""Live capture through PyAudio (PortAudio), resampled to the target rate.

PortAudio runs in callback mode: its thread hands each device buffer to
:meth:`MicSource._on_audio`, which only timestamps and queues it, and sees the
``paInputOverflow`` flag, so overflows are counted exactly (a blocking ``read`` with
``exception_on_overflow=False`` would hide them). The reader thread downmixes, resamples
(soxr stream, causal) and re-chunks. When the reader falls more than ``max_buffer_s``
behind, new buffers are dropped and counted, and the next chunk's ``sample_index`` jumps
by what was lost, so stream time keeps matching real time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from beatbus.stderr import quiet_stderr

from .errors import AudioSourceError
from .frames import DEFAULT_HOP, DEFAULT_SR, NS, Chunk, Rechunker, Source, StreamResampler
from .soundserver import list_sources

__all__ = ["MicSource", "list_devices"]

_INSTALL_HINT = "PyAudio is not installed: pip install 'beatbus[audio]'"
_DRIFT_PPM = 1000  # how fast the wall-clock anchor may move later (device vs system clock)


def _pa_cause(exc: BaseException) -> str:
    """PyAudio raises OSError/ValueError with args (text, code): keep the text."""
    for arg in exc.args:
        if isinstance(arg, str) and arg:
            return " ".join(arg.split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _import_pyaudio():
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioSourceError(_INSTALL_HINT) from exc
    return pyaudio


def _open_portaudio():
    pyaudio = _import_pyaudio()
    try:
        with quiet_stderr():
            return pyaudio, pyaudio.PyAudio()
    except Exception as exc:
        raise AudioSourceError(f"cannot initialise PortAudio: {_pa_cause(exc)}") from exc


def _default_input(pa) -> int | None:
    try:
        return int(pa.get_default_input_device_info()["index"])
    except OSError:
        return None


def _portaudio_inputs(pa) -> list[dict[str, Any]]:
    default = _default_input(pa)
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info["maxInputChannels"]) > 0:
            name = str(info["name"])
            # snd-aloop's card is called "Loopback": what is played into one half comes out of the other
            out.append({"kind": "loopback" if "loopback" in name.lower() else "input", "index": i,
                        "name": name, "description": "",
                        "max_input_channels": int(info["maxInputChannels"]),
                        "default_sample_rate": float(info["defaultSampleRate"]),
                        "is_default": i == default})
    return out


def _server_sources() -> list[dict[str, Any]]:
    return [{"kind": "monitor" if s["monitor"] else "input", "index": None, "name": s["name"],
             "description": s["description"], "max_input_channels": s["channels"],
             "default_sample_rate": float(s["rate"]), "is_default": False}
            for s in list_sources()]


def list_devices() -> list[dict[str, Any]]:
    """Audio inputs, for ``beatbus devices``: PortAudio's, then the sound server's sources.

    Returns
    -------
    list of dict
        ``kind`` (``input``; ``monitor``: a sound-server sink monitor, what this computer
        plays; ``loopback``: an ALSA snd-aloop device), ``index`` (what
        ``MicSource(device=...)`` takes; None for a sound-server source, chosen by name),
        ``name``, ``description`` (the sound server's; empty for PortAudio),
        ``max_input_channels``, ``default_sample_rate`` (Hz) and ``is_default`` (what
        ``MicSource()`` opens).

    Raises
    ------
    AudioSourceError
        PyAudio missing or PortAudio failing to start.
    """
    _, pa = _open_portaudio()
    try:
        inputs = _portaudio_inputs(pa)
    finally:
        with quiet_stderr():
            pa.terminate()
    return inputs + _server_sources()


def _by_name(pa, device: str) -> tuple[dict, str | None]:
    """A PortAudio input or sound-server source by exact name, else by a unique
    case-insensitive part of its name or description."""
    candidates = _portaudio_inputs(pa) + _server_sources()
    hits = [d for d in candidates if d["name"] == device] or \
           [d for d in candidates if device.lower() in f"{d['name']}\n{d['description']}".lower()]
    if not hits:
        raise AudioSourceError(f"no audio device matches {device!r} (see `beatbus devices`)")
    if len(hits) > 1:
        raise AudioSourceError(f"more than one audio device matches {device!r}: "
                               f"{', '.join(d['name'] for d in hits)} (see `beatbus devices`)")
    hit = hits[0]
    if hit["index"] is not None:
        return pa.get_device_info_by_index(hit["index"]), None
    pulse = [d["index"] for d in candidates if d["index"] is not None and d["name"] == "pulse"]
    if not pulse:
        raise AudioSourceError(f"{hit['name']} is a sound-server source, but PortAudio has no 'pulse' "
                               "device: the ALSA pulse plugin is missing (install libasound2-plugins)")
    return pa.get_device_info_by_index(pulse[0]), hit["name"]


def _resolve(pa, device: int | str | None) -> tuple[dict, str | None]:
    """The PortAudio device to open, and the sound-server source to capture through it (or None)."""
    count = pa.get_device_count()
    if device is None:
        index = _default_input(pa)
        if index is None:
            raise AudioSourceError("no audio input device found (no sound card or "
                                   "microphone; see `beatbus devices`)")
    elif isinstance(device, str) and not device.strip().isdigit():
        return _by_name(pa, device)
    else:
        index = int(device)
        if not 0 <= index < count:
            raise AudioSourceError(f"audio device {index} does not exist: {count} "
                                   "device(s) found (see `beatbus devices`)")
    info = pa.get_device_info_by_index(index)
    if int(info["maxInputChannels"]) < 1:
        raise AudioSourceError(f"audio device {index} ({info['name']}) has no input channels")
    return info, None


@contextlib.contextmanager
def _pulse_source(name: str | None) -> Iterator[None]:
    """While PortAudio opens its ``pulse`` device, make ``name`` the sound server's source.

    PortAudio cannot name a sound-server source, but the ALSA pulse plugin opens a libpulse
    client when the stream opens, and libpulse takes ``PULSE_SOURCE`` as that client's
    default source. Restored afterwards, so it reaches no other stream.
    """
    if name is None:
        yield
        return
    old = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = name
    try:
        yield
    finally:
        if old is None:
            del os.environ["PULSE_SOURCE"]
        else:
            os.environ["PULSE_SOURCE"] = old


class MicSource(Source):
    """Capture from an audio input device as hop-sized chunks at ``sr``.

    Parameters
    ----------
    device : int or str, optional
        Device index from :func:`list_devices`, or the exact name or a unique
        case-insensitive part of the name or description of a PortAudio input or a
        sound-server source (e.g. ``"monitor"``: what this computer plays); default: the
        system's default input.
    sr, hop : int
        Target rate (Hz) and samples per chunk (1 to 20 ms worth).
    channels : int
        Channels to open, capped at the device's maximum; downmixed to mono.
    device_rate : int, optional
        Capture rate (Hz); default the device's default rate.
    max_buffer_s : float
        Audio queued for a slow reader before new buffers are dropped (and counted).
    read_timeout_s : float
        Raise when the device delivers nothing for this long.

    Attributes
    ----------
    device_index, device_name, device_rate, channels
        What was actually opened (for a sound-server source, PortAudio's ``pulse`` device
        and the source's name).
    stats : dict
        ``chunks``, ``samples``, ``overflows`` (PortAudio input overflows: the device
        buffer overran before we got it), ``dropped_samples`` (at ``sr``, lost because the
        reader fell behind), ``nonfinite_samples`` (always 0 for 16-bit capture).

    Raises
    ------
    AudioSourceError
        PyAudio missing, no input device, device out of range, a name matching no device
        or several, a sound-server source without the ALSA pulse plugin, or a rate / channel
        count the device refuses; while reading, a device that stops delivering audio.
    """

    def __init__(self, device: int | str | None = None, *, sr: int = DEFAULT_SR,
                 hop: int = DEFAULT_HOP, channels: int = 1, device_rate: int | None = None,
                 max_buffer_s: float = 2.0, read_timeout_s: float = 5.0):
        super().__init__(sr, hop)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels={channels!r} must be a positive integer")
        if device_rate is not None and not device_rate > 0:
            raise ValueError(f"device_rate={device_rate!r} must be a positive rate (Hz)")
        self._read_timeout_s = float(read_timeout_s)
        self._stream = None
        self._pyaudio, self._pa = _open_portaudio()
        try:
            self._open(device, channels, device_rate, max_buffer_s)
        except BaseException:
            self._terminate()
            raise

    def _open(self, device, channels, device_rate, max_buffer_s) -> None:
        pa, pyaudio = self._pa, self._pyaudio
        info, server_source = _resolve(pa, device)
        self.device_index, self.device_name = int(info["index"]), server_source or str(info["name"])
        self.device_rate = int(device_rate or round(float(info["defaultSampleRate"])))
        self.channels = min(channels, int(info["maxInputChannels"]))
        # One device buffer per hop keeps latency at one hop.
        self._fpb = max(1, round(self.device_rate * self.hop / self.sr))
        self._queue: queue.Queue = queue.Queue(
            max(2, int(np.ceil(max_buffer_s * self.device_rate / self._fpb))))
        self._device_pos = 0  # device frames delivered by the callback so far
        try:
            with _pulse_source(server_source), quiet_stderr():
                pa.is_format_supported(self.device_rate, input_device=self.device_index,
                                       input_channels=self.channels,
                                       input_format=pyaudio.paInt16)
                self._stream = pa.open(format=pyaudio.paInt16, channels=self.channels,
                                       rate=self.device_rate, input=True,
                                       input_device_index=self.device_index,
                                       frames_per_buffer=self._fpb, start=False,
                                       stream_callback=self._on_audio)
        except (OSError, ValueError) as exc:
            raise AudioSourceError(
                f"audio device {self.device_index} ({self.device_name}) refused "
                f"{self.device_rate} Hz, {self.channels} channel(s), 16-bit: "
                f"{_pa_cause(exc)}") from exc

    def _on_audio(self, in_data, frame_count, time_info, status):
        """PortAudio's thread: stamp and queue, nothing else (it must not block)."""
        now = time.time_ns()
        if status & self._pyaudio.paInputOverflow:
            # PortAudio does not say how much the device overwrote, so sample_index cannot
            # jump for it: counted here only.
            self.stats["overflows"] += 1
        # Wall time of the buffer's first sample: PortAudio's ADC time when it gives one,
        # but never less than one buffer ago (the buffer is complete when we get it; some
        # ALSA plugins report ADC time == current time).
        lag_s = time_info.get("current_time", 0.0) - time_info.get("input_buffer_adc_time", 0.0)
        lag_s = lag_s if 0.0 <= lag_s < 1.0 else 0.0
        first_wall = now - int(max(lag_s, frame_count / self.device_rate) * NS)
        pos, self._device_pos = self._device_pos, self._device_pos + frame_count
        try:
            self._queue.put_nowait((pos, in_data, first_wall))
        except queue.Full:
            pass  # the reader sees the gap in positions and counts it
        return (None, self._pyaudio.paContinue)

    def _chunks(self) -> Iterator[Chunk]:
        with quiet_stderr():
            self._stream.start_stream()
        resample = StreamResampler(self.device_rate, self.sr)
        rechunk = Rechunker(self.hop)
        index, expected_pos, anchor = 0, 0, None
        last_data = time.monotonic()
        while not self.closed:
            try:
                pos, data, first_wall = self._queue.get(timeout=0.1)
            except queue.Empty:
                idle = time.monotonic() - last_data
                if not self.closed and idle > self._read_timeout_s:
                    raise AudioSourceError(
                        f"audio device {self.device_index} ({self.device_name}) delivered "
                        f"no audio for {self._read_timeout_s:g} s") from None
                continue
            last_data = time.monotonic()
            # Wall time of device sample 0 seen from this buffer. Scheduling jitter only
            # makes a buffer look later, so keep the earliest estimate, but let it creep
            # later slowly so a device clock slower than the system clock is followed.
            est = first_wall - pos * NS // self.device_rate
            allow = len(data) // (2 * self.channels) * NS * _DRIFT_PPM // (
                self.device_rate * 1_000_000)
            anchor = est if anchor is None else min(anchor + allow, est)
            if pos != expected_pos:  # buffers were dropped: reader fell behind
                for piece in rechunk.push(resample.flush()):
                    yield Chunk(piece, index, anchor + index * NS // self.sr)
                    index += len(piece)
                rechunk.clear()
                resample.reset()
                resumed = max(index, round(pos * self.sr / self.device_rate))
                self.stats["dropped_samples"] += resumed - index
                index = resumed
            pcm = np.frombuffer(data, "<i2")
            expected_pos = pos + len(pcm) // self.channels
            x = pcm.astype(np.float32) * (1.0 / 32768.0)
            if self.channels > 1:
                x = x.reshape(-1, self.channels).mean(axis=1)
            for piece in rechunk.push(resample(x)):
                if self.closed:
                    return
                yield Chunk(piece, index, anchor + index * NS // self.sr)
                index += len(piece)

    def _terminate(self) -> None:
        stream, self._stream = getattr(self, "_stream", None), None
        pa, self._pa = getattr(self, "_pa", None), None
        with quiet_stderr():
            if stream is not None:
                try:
                    stream.stop_stream()
                    stream.close()
                except Exception:  # noqa: BLE001 - already stopped by the device going away
                    pass
            if pa is not None:
                pa.terminate()

    def _release(self) -> None:
        self._terminate()
