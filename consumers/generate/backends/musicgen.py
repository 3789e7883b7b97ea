"""MusicGen through transformers: text (and melody) conditioned audio, any length up to 120 s.

- :class:`MusicGen` wraps ``MusicgenForConditionalGeneration`` or, for melody conditioning,
  ``MusicgenMelodyForConditionalGeneration`` plus the tokenizer. Weights load with
  :func:`~consumers.generate.models.from_pretrained` (local directory or warm cache only).
- Parameters follow audiocraft's: ``top_p > 0`` samples from the nucleus and ignores
  ``top_k``; ``top_k = 0`` disables top-k; ``cfg_coef`` is transformers' ``guidance_scale``.
- Durations past one window (30 s by default, never past the decoder's positions) continue
  window by window: the last ``overlap`` seconds are re-encoded with EnCodec and given to
  the decoder as its prompt, and the new audio is joined with a 10 ms cross-fade.
- Melody conditioning computes MusicGen-Melody's chroma here (torch STFT + the librosa
  chroma filter bank from ``transformers.audio_utils``, argmax one-hot per frame), because
  transformers' feature extractor needs torchaudio, which has no build for this torch.
  A melody shorter than the output is looped.

Output: float32 mono at the model's rate (32 kHz), exactly ``round(duration * sr)`` samples.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import numpy as np

from beatbus.audio import resample

from ..models import from_pretrained, torch_device

__all__ = ["MusicGen", "melody_chroma", "ProgressFn"]

ProgressFn = Callable[[int, int], None]     # (decoder steps done, total steps)
_XFADE_S = 0.01


def melody_chroma(x: np.ndarray, sr: int, *, frames: int, n_fft: int = 16384, hop: int = 4096):
    """MusicGen-Melody's conditioning: one-hot dominant pitch class per frame, shape (frames, 12).

    ``x`` is padded or cut to ``(frames - 1) * hop`` samples at ``sr`` (32 kHz), as the
    reference extractor pads to its 30 s chunk.
    """
    import torch
    from transformers.audio_utils import chroma_filter_bank

    n = (frames - 1) * hop
    x = np.asarray(x, dtype=np.float32)[:n]
    x = np.pad(x, (0, n - len(x)))
    if n < n_fft:
        x = np.pad(x, ((n_fft - n) // 2, (n_fft - n + 1) // 2))
    fb = torch.from_numpy(chroma_filter_bank(sampling_rate=sr, num_frequency_bins=n_fft, tuning=0,
                                             num_chroma=12)).float()
    spec = torch.stft(torch.from_numpy(x), n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft),
                      center=True, pad_mode="reflect", return_complex=True).abs() ** 2
    chroma = torch.nn.functional.normalize(fb @ spec, p=float("inf"), dim=0, eps=1e-6).T[:frames]
    onehot = torch.zeros_like(chroma).scatter_(-1, chroma.argmax(-1, keepdim=True), 1.0)
    return onehot


class _Progress:
    """A logits processor that only counts decoder steps (transformers calls it once per step)."""

    def __init__(self, fn: ProgressFn | None, done: int, total: int):
        self.fn, self.done, self.total = fn, done, total

    def __call__(self, input_ids, scores):
        self.done += 1
        if self.fn is not None:
            self.fn(self.done, self.total)
        return scores


class MusicGen:
    """A loaded MusicGen model, ready to generate.

    Parameters
    ----------
    model, tokenizer
        ``Musicgen(Melody)ForConditionalGeneration`` and its text tokenizer.
    name : str
        Where the weights came from (for metadata).
    """

    def __init__(self, model, tokenizer, *, name: str, melody: bool):
        self.model, self.tokenizer, self.name, self.melody = model, tokenizer, name, melody
        audio_cfg = model.config.audio_encoder
        self.sr = int(audio_cfg.sampling_rate)
        self.frame_rate = int(audio_cfg.frame_rate)
        self.hop = self.sr // self.frame_rate
        self.num_codebooks = int(model.decoder.num_codebooks)
        self.chroma_frames = int(getattr(model.config, "chroma_length", 0)) if melody else 0
        positions = int(model.config.decoder.max_position_embeddings)
        # Decoder positions hold the start token, delay steps and (melody) the chroma prefix.
        self.max_frames = positions - self.chroma_frames - self.num_codebooks

    @property
    def device(self):
        return self.model.device

    @classmethod
    def load(cls, name: str, *, device: str = "cpu", melody: bool = False) -> MusicGen:
        """Load from a local directory or a warm cache (never the network)."""
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

        dev = torch_device(device)
        kind = "musicgen-melody" if melody else "musicgen"
        what = "MusicGen-Melody model" if melody else "MusicGen model"
        model_cls = MusicgenMelodyForConditionalGeneration if melody else MusicgenForConditionalGeneration
        model = from_pretrained(model_cls, name, what=what, kind=kind)
        tokenizer = from_pretrained(AutoTokenizer, name, what=f"{what} tokenizer", kind=kind)
        model.to(dev).eval()
        return cls(model, tokenizer, name=name, melody=melody)

    # -- planning -----------------------------------------------------------------
    def plan(self, duration: float, *, window_seconds: float = 30.0, overlap_seconds: float = 10.0,
             prompted: bool = False) -> list[int]:
        """New frames per window for ``duration`` seconds (a prompted first window has less room)."""
        total = math.ceil(duration * self.frame_rate)
        window = max(2, min(int(window_seconds * self.frame_rate), self.max_frames))
        overlap = self._overlap(window_seconds, overlap_seconds)
        plan = [min(total, window - overlap if prompted else window)]
        while sum(plan) < total:
            plan.append(min(total - sum(plan), window - overlap))
        return plan

    def _overlap(self, window_seconds: float, overlap_seconds: float) -> int:
        window = max(2, min(int(window_seconds * self.frame_rate), self.max_frames))
        return min(max(1, int(overlap_seconds * self.frame_rate)), window - 1)

    def steps(self, plan: list[int]) -> int:
        """Decoder steps for a plan: each window also pays the codebook delay."""
        return sum(n + self.num_codebooks - 1 for n in plan)

    # -- generation ---------------------------------------------------------------
    def _encode_prompt(self, tail: np.ndarray):
        import torch

        with torch.no_grad():
            values = torch.from_numpy(tail.astype(np.float32))[None, None].to(self.device)
            codes = self.model.audio_encoder.encode(values).audio_codes      # (1, batch, K, T)
        return codes[0].reshape(self.num_codebooks, -1)

    def generate(self, prompt: str, *, duration: float, temperature: float = 1.0, top_k: int = 250,
                 top_p: float = 0.0, cfg_coef: float = 3.0, seed: int | None = None,
                 melody: tuple[np.ndarray, int] | None = None, audio_prompt: tuple[np.ndarray, int] | None = None,
                 window_seconds: float = 30.0, overlap_seconds: float = 10.0,
                 progress: ProgressFn | None = None) -> tuple[np.ndarray, dict]:
        """Generate ``duration`` seconds; returns (float32 audio at ``self.sr``, info).

        ``melody`` (samples, sr) conditions a MusicGen-Melody model on its chroma;
        ``audio_prompt`` (samples, sr) is continued: its last ``overlap_seconds`` prompt the
        decoder and the result holds only the new audio. ``info`` holds ``steps``, ``windows``,
        ``seconds`` (wall time of generation), ``steps_per_second`` and ``rtf`` (wall time / audio time).
        """
        import torch
        from transformers import LogitsProcessorList

        if melody is not None and not self.melody:
            raise ValueError("melody conditioning needs a MusicGen-Melody model")
        overlap_frames = self._overlap(window_seconds, overlap_seconds)
        audio: np.ndarray | None = None
        if audio_prompt is not None:
            audio = resample(np.asarray(audio_prompt[0], dtype=np.float32), audio_prompt[1], self.sr)
            audio = audio[-overlap_frames * self.hop:] if len(audio) >= self.hop else None
        head = 0 if audio is None else len(audio)
        plan = self.plan(duration, window_seconds=window_seconds, overlap_seconds=overlap_seconds,
                         prompted=audio is not None)
        total_steps = self.steps(plan)
        counter = _Progress(progress, 0, total_steps)
        text = self.tokenizer([prompt or "music"], return_tensors="pt", padding=True).to(self.device)
        sampling = dict(do_sample=True, temperature=float(temperature), guidance_scale=float(cfg_coef),
                        top_k=0 if top_p > 0 else int(top_k), top_p=float(top_p) if top_p > 0 else 1.0)
        tune = None
        if melody is not None:
            x, msr = melody
            tune = resample(np.asarray(x, dtype=np.float32), msr, self.sr)
            need = int((duration + window_seconds) * self.sr)
            tune = np.tile(tune, max(1, math.ceil(need / max(1, len(tune)))))[:need]
        started = time.perf_counter()
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with rng if seed is not None else contextlib.nullcontext(), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            for new_frames in plan:
                kwargs = dict(text)
                prompt_len = 0
                if audio is not None:
                    prompt_len = min(overlap_frames * self.hop, len(audio))
                    kwargs["decoder_input_ids"] = self._encode_prompt(audio[-prompt_len:])
                if tune is not None:
                    offset = 0 if audio is None else max(0, len(audio) - prompt_len - head)
                    segment = tune[offset:offset + (self.chroma_frames - 1) * 4096]
                    kwargs["input_features"] = melody_chroma(segment, self.sr, frames=self.chroma_frames)[None].to(
                        self.device)
                out = self.model.generate(**kwargs, **sampling, max_new_tokens=new_frames + self.num_codebooks - 1,
                                          logits_processor=LogitsProcessorList([counter]))
                wav = out[0, 0].float().cpu().numpy()
                audio = wav if audio is None else _join(audio, wav, prompt_len, int(_XFADE_S * self.sr))
        seconds = time.perf_counter() - started
        n = int(round(duration * self.sr))
        audio = audio[head:]
        audio = np.pad(audio, (0, max(0, n - len(audio))))[:n].astype(np.float32)
        return audio, {"steps": counter.done, "windows": len(plan), "seconds": round(seconds, 3),
                       "steps_per_second": round(counter.done / seconds, 2) if seconds > 0 else None,
                       "rtf": round(seconds / duration, 4)}


def _join(audio: np.ndarray, wav: np.ndarray, prompt_len: int, xfade: int) -> np.ndarray:
    """Append the part of ``wav`` after its re-encoded prompt, cross-fading over ``xfade`` samples."""
    xfade = min(xfade, prompt_len, len(audio))
    if xfade == 0:
        return np.concatenate([audio, wav[prompt_len:]])
    ramp = np.linspace(0.0, 1.0, xfade, dtype=np.float32)
    seam = audio[-xfade:] * (1 - ramp) + wav[prompt_len - xfade:prompt_len] * ramp
    return np.concatenate([audio[:-xfade], seam, wav[prompt_len:]])
