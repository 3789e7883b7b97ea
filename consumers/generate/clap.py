"""CLAP audio embeddings and nearest-neighbour search over the stored ones.

- :class:`ClapEmbedder` runs transformers' ``ClapModel`` (laion/clap-htsat-unfused layout:
  48 kHz, 10 s windows, 512-d projection). Audio longer than one window is cut into
  non-overlapping 10 s windows (the last one repeat-padded) and the window embeddings are
  averaged, so the result is deterministic (the feature extractor's ``rand_trunc`` would
  crop at random). The result is L2-normalised.
- :class:`EmbeddingIndex` searches every upload's ``embedding.npy`` by cosine similarity
  (a dot product of unit vectors) with numpy; the matrix is reloaded when uploads change.
  Thousands of uploads take microseconds; past ~10^6, use a vector index instead.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from beatbus.audio import resample

from .errors import InvalidRequest, NotFound
from .models import from_pretrained, torch_device
from .storage import Store

__all__ = ["ClapEmbedder", "EmbeddingIndex", "l2_normalize"]


def l2_normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


class ClapEmbedder:
    """A loaded CLAP model: audio -> 512-d unit vector."""

    def __init__(self, model, feature_extractor, *, name: str):
        self.model, self.fe, self.name = model, feature_extractor, name
        self.sr = int(feature_extractor.sampling_rate)
        self.window = int(feature_extractor.nb_max_samples)
        self.dim = int(model.config.projection_dim)

    @classmethod
    def load(cls, name: str, *, device: str = "cpu") -> ClapEmbedder:
        from transformers import ClapFeatureExtractor, ClapModel

        dev = torch_device(device)
        model = from_pretrained(ClapModel, name, what="CLAP model", kind="clap")
        fe = from_pretrained(ClapFeatureExtractor, name, what="CLAP feature extractor", kind="clap")
        model.to(dev).eval()
        return cls(model, fe, name=name)

    def embed(self, x: np.ndarray, sr: int) -> np.ndarray:
        """Embedding of mono audio ``x`` at ``sr``: float32 (dim,), unit length."""
        import torch

        x = resample(np.asarray(x, dtype=np.float32), sr, self.sr)
        if len(x) == 0:
            raise InvalidRequest("cannot embed empty audio")
        windows = [x[i:i + self.window] for i in range(0, len(x), self.window)]
        if len(windows) > 1 and len(windows[-1]) < self.window // 4:
            windows.pop()       # a short tail repeat-padded to 10 s would outweigh its content
        feats = self.fe(windows, sampling_rate=self.sr, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_audio_features(input_features=feats["input_features"].to(self.model.device),
                                                is_longer=feats.get("is_longer"))
        vectors = getattr(out, "pooler_output", out)        # transformers 5 returns an output object
        return l2_normalize(l2_normalize(vectors.float().cpu().numpy()).mean(axis=0))


class EmbeddingIndex:
    """Cosine nearest neighbours over a :class:`Store`'s embeddings."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._ids: list[str] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def _refresh(self) -> None:
        entries = sorted(self.store.iter_embeddings())
        stamp = tuple((i, os.stat(p).st_mtime_ns) for i, p in entries)
        if stamp == self._stamp:
            return
        ids, rows = [], []
        for audio_id, path in entries:
            try:
                rows.append(np.load(path, allow_pickle=False).astype(np.float32))
                ids.append(audio_id)
            except (OSError, ValueError):
                continue                    # removed or half-written meanwhile: next refresh sees it
        dims = {r.shape for r in rows}
        if len(dims) > 1:                   # a model change: keep the most common dimension
            common = max(dims, key=lambda d: sum(r.shape == d for r in rows))
            ids, rows = zip(*[(i, r) for i, r in zip(ids, rows) if r.shape == common]) if rows else ([], [])
        self._ids = list(ids)
        self._matrix = l2_normalize(np.stack(rows)) if rows else np.zeros((0, 0), dtype=np.float32)
        self._stamp = stamp

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._ids)

    def search(self, vector: np.ndarray, k: int = 5, *, exclude: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` most similar uploads as (audio id, cosine similarity), best first."""
        with self._lock:
            self._refresh()
            if not self._ids:
                return []
            if self._matrix.shape[1] != np.asarray(vector).shape[-1]:
                raise InvalidRequest(f"embedding has {np.asarray(vector).shape[-1]} dims, the index "
                                     f"{self._matrix.shape[1]}")
            scores = self._matrix @ l2_normalize(vector)
            order = np.argsort(-scores)
            out = [(self._ids[i], float(scores[i])) for i in order if self._ids[i] != exclude]
            return out[:k]

    def similar(self, audio_id: str, k: int = 5) -> list[tuple[str, float]]:
        """Neighbours of a stored upload (itself excluded). NotFound if it has no embedding yet."""
        vector = self.store.load_embedding(audio_id)
        if vector is None:
            raise NotFound(f"audio {audio_id} has no embedding yet")
        return self.search(vector, k, exclude=audio_id)
