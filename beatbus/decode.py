"""Streaming audio file decoders: soundfile (libsndfile), with ffmpeg as the fallback.

A decoder reads a file in blocks of float32 ``(frames, channels)`` at the file's own
rate, so an hour-long file never sits in memory. ``blocks()`` starts from the beginning
on every call, which is how :class:`beatbus.producers.file.FileSource` loops.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import numpy as np

from .errors import AudioSourceError
from .stderr import quiet_stderr

__all__ = ["Decoder", "SoundfileDecoder", "FfmpegDecoder", "open_decoder", "DECODERS"]

BLOCK_S = 0.25  # seconds decoded per read: small enough to start fast, large enough to be cheap
DECODERS = ("auto", "soundfile", "ffmpeg")


class _NoSamples(AudioSourceError):
    """The file decodes fine but holds no audio: no point trying another decoder."""


def _one_line(exc: BaseException | str, path: str = "") -> str:
    text = " ".join(str(exc).split())
    if path:  # ffmpeg prefixes its messages with the path we already print
        text = text.removeprefix(f"{path}: ")
    return text or type(exc).__name__


class Decoder:
    """A file opened for block-wise decoding.

    Attributes
    ----------
    path : str
    rate : int
        The file's sample rate (Hz).
    channels : int
    """

    path: str
    rate: int
    channels: int

    def blocks(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        """Yield float32 arrays [shape=(frames, channels)] from the start of the file."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file or process."""


class SoundfileDecoder(Decoder):
    """WAV/FLAC/OGG (and MP3 when the bundled libsndfile >= 1.1 supports it)."""

    def __init__(self, path: str):
        import soundfile as sf

        self.path = path
        try:
            with quiet_stderr():  # libmpg123 chatters about broken MP3 headers
                self._f = sf.SoundFile(path)
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
            cause = _one_line(getattr(exc, "error_string", None) or exc)
            raise AudioSourceError(f"{path}: {cause}") from exc
        self.rate, self.channels = int(self._f.samplerate), int(self._f.channels)
        self._passes = 0
        if self._f.frames == 0:  # a valid header with no frames
            self._f.close()
            raise _NoSamples(f"{path}: contains no audio samples")

    def blocks(self) -> Iterator[np.ndarray]:
        import soundfile as sf

        if self._passes:  # reopen rather than seek: not every format seeks reliably
            self._f.close()
            try:
                self._f = sf.SoundFile(self.path)
            except Exception as exc:  # replaced or deleted while looping
                raise AudioSourceError(f"{self.path}: cannot reopen: {_one_line(exc)}") from exc
        self._passes += 1
        n = max(1, int(self.rate * BLOCK_S))
        while True:
            try:
                data = self._f.read(n, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioSourceError(f"{self.path}: decode error: {_one_line(exc)}") from exc
            if not len(data):
                return
            yield data

    def close(self) -> None:
        self._f.close()


class FfmpegDecoder(Decoder):
    """Anything ffmpeg reads, decoded by an ``ffmpeg`` subprocess to raw f32le."""

    def __init__(self, path: str):
        self.path = path
        ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
        if not ffmpeg or not ffprobe:
            raise AudioSourceError(f"{path}: cannot decode: ffmpeg/ffprobe not found on PATH")
        self._ffmpeg = ffmpeg
        cmd = [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
               "stream=sample_rate,channels", "-of", "json", path]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            stream = json.loads(res.stdout or "{}").get("streams", [])
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            raise AudioSourceError(f"{path}: ffprobe failed: {_one_line(exc)}") from exc
        if res.returncode != 0 or not stream:
            cause = _one_line(res.stderr.strip().splitlines()[-1], path) \
                if res.stderr.strip() else "no audio stream"
            raise AudioSourceError(f"{path}: {cause}")
        self.rate = int(stream[0].get("sample_rate", 0))
        self.channels = int(stream[0].get("channels", 0))
        if self.rate <= 0 or self.channels <= 0:
            raise AudioSourceError(f"{path}: no decodable audio stream")
        self._proc: subprocess.Popen | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        cmd = [self._ffmpeg, "-nostdin", "-v", "error", "-i", self.path, "-map", "0:a:0",
               "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
        frame_bytes = 4 * self.channels
        want = max(1, int(self.rate * BLOCK_S)) * frame_bytes
        # stderr goes to a file: a pipe nobody drains could fill up and stall ffmpeg.
        with tempfile.TemporaryFile() as err:
            self._proc = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            assert proc.stdout is not None
            try:
                tail = b""
                while True:
                    buf = proc.stdout.read(want)
                    if not buf:
                        break
                    buf = tail + buf
                    cut = len(buf) - len(buf) % frame_bytes
                    tail = buf[cut:]
                    if cut:
                        yield np.frombuffer(buf[:cut], "<f4").reshape(-1, self.channels).copy()
                if proc.wait() != 0:
                    err.seek(0)
                    lines = err.read().decode(errors="replace").strip().splitlines()
                    cause = _one_line(lines[-1], self.path) if lines \
                        else f"ffmpeg exit {proc.returncode}"
                    raise AudioSourceError(f"{self.path}: decode error: {cause}")
            finally:
                self._kill()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None and proc.stdout:
            proc.stdout.close()

    def close(self) -> None:
        self._kill()


def open_decoder(path: str | os.PathLike, decoder: str = "auto") -> Decoder:
    """Open ``path`` for decoding.

    Parameters
    ----------
    path : str or PathLike
    decoder : {'auto', 'soundfile', 'ffmpeg'}
        'auto' tries soundfile first and falls back to ffmpeg (MP3 on an old libsndfile,
        AAC, ...).

    Raises
    ------
    AudioSourceError
        Missing, empty, unreadable, corrupt or unsupported file; the message names the
        path and the cause on one line.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r} must be one of {', '.join(DECODERS)}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioSourceError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioSourceError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioSourceError(f"{path}: permission denied")
    if os.path.getsize(path) == 0:
        raise AudioSourceError(f"{path}: empty file")
    if decoder == "ffmpeg":
        return FfmpegDecoder(path)
    try:
        return SoundfileDecoder(path)
    except _NoSamples:
        raise
    except AudioSourceError as sf_exc:
        if decoder == "soundfile" or not shutil.which("ffmpeg"):
            raise
        try:
            return FfmpegDecoder(path)
        except AudioSourceError as ff_exc:
            sf_cause = str(sf_exc).removeprefix(f"{path}: ")
            ff_cause = str(ff_exc).removeprefix(f"{path}: ")
            raise AudioSourceError(f"{path}: unsupported or corrupt audio file "
                                   f"(soundfile: {sf_cause}; ffmpeg: {ff_cause})") from ff_exc
