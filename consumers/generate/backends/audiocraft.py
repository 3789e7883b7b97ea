"""Optional engine: Meta's audiocraft runs MusicGen when it is importable.

audiocraft 1.3 pins torch 2.1 (and xformers, and av 11 built against FFmpeg headers), so it
does not install next to this project's torch 2.13: this module is written against its
documented API but cannot be exercised here. transformers' MusicGen (the default engine,
:mod:`.musicgen`) runs the same checkpoints. Select it with ``generate.musicgen_engine =
"audiocraft"``; without the package the worker stops with a one-line DependencyError.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np

from beatbus.errors import DependencyError

from ..models import torch_device

__all__ = ["AudiocraftMusicGen", "available", "UNAVAILABLE"]

UNAVAILABLE = ("the audiocraft engine needs the 'audiocraft' package, which pins torch 2.1 and does not install "
               "next to torch 2.13; use musicgen_engine = \"transformers\" (the same MusicGen checkpoints)")


def available() -> bool:
    return importlib.util.find_spec("audiocraft") is not None


class AudiocraftMusicGen:
    """Same interface as :class:`~.musicgen.MusicGen`, backed by ``audiocraft.models.MusicGen``."""

    def __init__(self, model, *, name: str):
        self.model, self.name = model, name
        self.melody = "melody" in name
        self.sr = int(model.sample_rate)

    @classmethod
    def load(cls, name: str, *, device: str = "cpu", melody: bool = False) -> AudiocraftMusicGen:
        if not available():
            raise DependencyError(UNAVAILABLE)
        from audiocraft.models import MusicGen as _AudiocraftModel

        return cls(_AudiocraftModel.get_pretrained(name, device=str(torch_device(device))), name=name)

    def generate(self, prompt: str, *, duration: float, temperature: float = 1.0, top_k: int = 250,
                 top_p: float = 0.0, cfg_coef: float = 3.0, seed: int | None = None, melody=None, audio_prompt=None,
                 window_seconds: float = 30.0, overlap_seconds: float = 10.0, progress=None):
        import torch

        if seed is not None:
            torch.manual_seed(seed)
        self.model.set_generation_params(use_sampling=True, top_k=int(top_k), top_p=float(top_p),
                                         temperature=float(temperature), duration=float(duration),
                                         cfg_coef=float(cfg_coef), extend_stride=window_seconds - overlap_seconds)
        if progress is not None:
            self.model.set_custom_progress_callback(lambda done, total: progress(int(done), int(total)))
        started = time.perf_counter()
        if melody is not None:
            x, sr = melody
            wav = self.model.generate_with_chroma([prompt], torch.from_numpy(np.asarray(x, np.float32))[None, None],
                                                  sr)
        elif audio_prompt is not None:
            x, sr = audio_prompt
            tail = np.asarray(x, np.float32)[-int(overlap_seconds * sr):]
            wav = self.model.generate_continuation(torch.from_numpy(tail)[None, None], sr, [prompt])
            wav = wav[..., int(round(len(tail) * self.sr / sr)):]
        else:
            wav = self.model.generate([prompt])
        seconds = time.perf_counter() - started
        n = int(round(duration * self.sr))
        audio = wav[0, 0].float().cpu().numpy()
        audio = np.pad(audio, (0, max(0, n - len(audio))))[:n].astype(np.float32)
        return audio, {"steps": None, "windows": None, "seconds": round(seconds, 3), "steps_per_second": None,
                       "rtf": round(seconds / duration, 4), "engine": "audiocraft"}
