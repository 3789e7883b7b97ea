"""``small``: our own compact beat/downbeat activation network (issue 3 item 4).

A causal model over the same 272-value feature frames as BeatNet
(:mod:`processors.beat.features`), about 15 k parameters instead of BeatNet's 0.4 M::

    standardise (per-feature mean / std of the training set) -> linear 272 -> 32 -> ReLU
    -> GRU 32 (one layer, unidirectional) -> linear 32 -> 3 -> softmax [beat, downbeat, non-beat]

It is trained here (:mod:`lab.train.beat_small`: synthetic songs with exact labels, plus
distillation from BeatNet's model 1) and is the float reference of the FPGA model in ``hls/``.
Streaming state (the GRU's ``h``) is kept per source; on the CPU the per-frame step runs in
numpy (a torch call per 20 ms frame costs more than the arithmetic).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from beatbus.errors import ConfigError, DependencyError

from .bda import resolve_device
from .network import NetworkActivation

try:  # torch is an optional dependency (the ``ml`` extra)
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DependencyError("backend 'small' needs torch: pip install 'beatbus[ml]'") from exc

__all__ = ["DEFAULT_CHECKPOINT", "SmallNet", "NumpySmall", "SmallActivation", "load_small", "shared_small"]

DEFAULT_CHECKPOINT = Path(__file__).with_name("data") / "small.pt"
# a checkpoint to use instead of the shipped one when none is given (e.g. to evaluate a candidate
# with ``BEATBUS_SMALL_CHECKPOINT=cand.pt beatbus eval beats DIR --backend small``)
CHECKPOINT_ENV = "BEATBUS_SMALL_CHECKPOINT"


class SmallNet(nn.Module):
    """Standardise -> linear + ReLU -> GRU -> linear -> softmax, with explicit GRU state.

    Parameters
    ----------
    dim_in : int
        Feature values per frame (272).
    proj : int
        Width of the input projection.
    hidden : int
        GRU width.
    """

    def __init__(self, *, dim_in: int = 272, proj: int = 32, hidden: int = 32) -> None:
        super().__init__()
        self.dim_in, self.proj_size, self.hidden = dim_in, proj, hidden
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("std", torch.ones(dim_in))
        self.proj = nn.Linear(dim_in, proj)
        self.gru = nn.GRU(proj, hidden, num_layers=1, batch_first=True)
        self.linear = nn.Linear(hidden, 3)

    @property
    def config(self) -> dict:
        """Constructor arguments (stored in checkpoints)."""
        return {"dim_in": self.dim_in, "proj": self.proj_size, "hidden": self.hidden}

    def initial_state(self, n_streams: int = 1) -> torch.Tensor:
        """Zero GRU state ``[shape=(1, n_streams, hidden)]``."""
        return torch.zeros(1, n_streams, self.hidden, device=self.linear.weight.device)

    def logits(self, feats: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-softmax outputs ``[shape=(n_streams, n_frames, 3)]`` and the new state."""
        x = torch.relu(self.proj((feats - self.mean) / self.std))
        if state is None:
            state = self.initial_state(feats.shape[0])
        x, state = self.gru(x, state)
        return self.linear(x), state

    def forward(self, feats: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax ``[beat, downbeat, non-beat]`` for ``feats [shape=(n_streams, n_frames, 272)]``."""
        z, state = self.logits(feats, state)
        return torch.softmax(z, dim=-1), state

    @torch.inference_mode()
    def step(self, feats: np.ndarray, state: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """Advance many streams by one frame in one batched call (GPU batching).

        Parameters
        ----------
        feats : array [shape=(n_streams, 272)]
        state : torch.Tensor [shape=(1, n_streams, hidden)] or None

        Returns
        -------
        probs : np.ndarray [shape=(n_streams, 3)]
        state : torch.Tensor
        """
        x = torch.as_tensor(np.asarray(feats, dtype=np.float32), device=self.linear.weight.device)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"feats shape={tuple(x.shape)} must be (n_streams, {self.dim_in})")
        probs, state = self(x[:, None, :], state)
        return probs[:, 0].cpu().numpy(), state


class NumpySmall:
    """:class:`SmallNet` evaluated with numpy for one stream (same call shape as ``NumpyBDA``)."""

    def __init__(self, net: SmallNet) -> None:
        sd = {k: v.detach().cpu().double().numpy() for k, v in net.state_dict().items()}
        # fold the standardisation into the projection: (x - m) / s @ W.T + b
        w = sd["proj.weight"] / sd["std"][None, :]
        self.w0 = np.ascontiguousarray(w.T)  # (272, proj)
        self.b0 = sd["proj.bias"] - w @ sd["mean"]
        self.hidden = net.hidden
        self.w_ih = np.ascontiguousarray(sd["gru.weight_ih_l0"].T)  # (proj, 3H): r, z, n
        self.w_hh = np.ascontiguousarray(sd["gru.weight_hh_l0"].T)
        self.b_ih = sd["gru.bias_ih_l0"]
        self.b_hh = sd["gru.bias_hh_l0"]
        self.w_out = np.ascontiguousarray(sd["linear.weight"].T)
        self.b_out = sd["linear.bias"]

    def initial_state(self) -> np.ndarray:
        """Zero GRU state ``[shape=(hidden,)]``."""
        return np.zeros(self.hidden)

    def embed(self, feats: np.ndarray) -> np.ndarray:
        """Input part of the GRU gates, ``(n, 272) -> (n, 3 * hidden)``; rows are independent."""
        x = np.asarray(feats, dtype=np.float64)
        return np.maximum(x @ self.w0 + self.b0, 0.0) @ self.w_ih + self.b_ih

    def step(self, gx: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Advance ``s`` streams one frame: ``gx [shape=(s, 3H)]`` from :meth:`embed`, ``state
        [shape=(s, H)]`` updated in place; returns probabilities ``[shape=(s, 3)]``."""
        hid = self.hidden
        gh = state @ self.w_hh + self.b_hh
        rz = 1.0 / (1.0 + np.exp(-(gx[:, : 2 * hid] + gh[:, : 2 * hid])))
        n = np.tanh(gx[:, 2 * hid :] + rz[:, :hid] * gh[:, 2 * hid :])
        state[:] = (1.0 - rz[:, hid:]) * n + rz[:, hid:] * state
        z = state @ self.w_out + self.b_out
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def __call__(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[shape=(n, 3)]`` for one stream's ``feats [shape=(n, 272)]``, and the
        new state (the given one is not modified)."""
        gx = self.embed(feats)
        h = np.array(state, dtype=np.float64).reshape(1, -1)
        out = np.empty((gx.shape[0], 3))
        for i in range(gx.shape[0]):  # the recurrence is sequential in time
            out[i] = self.step(gx[i : i + 1], h)[0]
        return out, h[0]


def load_small(path: str | Path | None = None, *, device: str = "cpu") -> SmallNet:
    """Load a :class:`SmallNet` checkpoint (default: ``$BEATBUS_SMALL_CHECKPOINT``, else the one
    shipped in ``processors/beat/data``).

    Raises
    ------
    ConfigError
        When the checkpoint does not exist (train one with ``beatbus train beat-small``) or is not
        a ``small`` checkpoint (named as coming from ``$BEATBUS_SMALL_CHECKPOINT`` when it does).
    """
    if path is None:
        path = os.environ.get(CHECKPOINT_ENV) or DEFAULT_CHECKPOINT
    p = Path(path)
    where = f" ({CHECKPOINT_ENV})" if str(p) == os.environ.get(CHECKPOINT_ENV) else ""
    if not p.is_file():
        raise ConfigError(f"no small-model checkpoint at {str(p)!r}{where}: "
                          f"run 'beatbus train beat-small --out {p}'")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        net = SmallNet(**ckpt["config"])
        net.load_state_dict(ckpt["state_dict"], strict=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip, shape and key errors all mean one thing here)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{str(p)!r}{where} is not a small-model checkpoint "
                          f"(one written by 'beatbus train beat-small'): {first}") from None
    return net.to(resolve_device(device)).eval()


@lru_cache(maxsize=8)
def shared_small(checkpoint: str | None = None, device: str = "cpu") -> SmallNet:
    """One loaded network per (checkpoint, device), shared by every stream (so they batch together)."""
    return load_small(checkpoint, device=device)


class SmallActivation(NetworkActivation):
    """Streaming ``small`` activation for one stream: features -> :class:`SmallNet` -> ``[beat, downbeat]``.

    Same outputs and post-processing (silence gate, spectral-flux mix, downbeat cue) as the other
    network backends (:class:`~processors.beat.network.NetworkActivation`).

    Parameters
    ----------
    checkpoint : path or None
        Model file; None = ``$BEATBUS_SMALL_CHECKPOINT``, else the shipped ``processors/beat/data/small.pt``.
    device : {"cpu", "cuda"}
    silence_db : float
    net : SmallNet or None
        Share one loaded network between many processors.
    onset_weight : float or None
        0..1 share of the normalised spectral flux mixed in (None: the default, see
        :class:`~processors.beat.network.NetworkActivation`).
    """

    name = "small"
    # The small model (and its quantized twin, ``hls``) fires softer and wider than BeatNet:
    # BeatNet's steadier tempo and narrow non-beat share made it lock onto wrong phases (mean F
    # 0.57); the tracker's generic settings, as for the flux, suit it (0.72): inherited unchanged.

    def __init__(
        self,
        *,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        silence_db: float = NetworkActivation.SILENCE_DB,
        net: SmallNet | None = None,
        onset_weight: float | None = None,
    ) -> None:
        super().__init__(silence_db=silence_db, onset_weight=onset_weight)
        if net is None:  # the variable resolved here, not inside the cache: a changed value is a new net
            checkpoint = checkpoint if checkpoint is not None else os.environ.get(CHECKPOINT_ENV)
            net = shared_small(None if not checkpoint else str(checkpoint), device)
        self.net = net
        self.device = self.net.linear.weight.device.type
        self._np = NumpySmall(self.net) if self.device == "cpu" else None
        self.reset()

    @staticmethod
    def infer_many(acts: list[SmallActivation], feats: list[np.ndarray]) -> list[np.ndarray]:
        """Network probabilities ``[shape=(n_i, 3)]`` for many streams (equal :attr:`batch_key`),
        one batched GRU step per frame; advances each stream's state."""
        counts = [f.shape[0] for f in feats]
        out = [np.empty((n, 3)) for n in counts]
        npnet = acts[0]._np
        if npnet is None:  # GPU: one batched torch step per frame
            for i in range(max(counts, default=0)):
                idx = [j for j, n in enumerate(counts) if n > i]
                state = torch.cat([acts[j].state for j in idx], dim=1)
                probs, state = acts[0].net.step(np.stack([feats[j][i] for j in idx]), state)
                for r, j in enumerate(idx):
                    acts[j].state = state[:, r : r + 1]
                    out[j][i] = probs[r]
            return out
        if not sum(counts):
            return out
        gx = npnet.embed(np.concatenate(feats))
        starts = np.cumsum([0, *counts[:-1]])
        for i in range(max(counts)):  # frames in time order; streams side by side
            idx = [j for j, n in enumerate(counts) if n > i]
            state = np.stack([acts[j].state for j in idx])
            probs = npnet.step(gx[starts[idx] + i], state)
            for r, j in enumerate(idx):
                acts[j].state = state[r]
                out[j][i] = probs[r]
        return out
