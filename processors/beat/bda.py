"""BeatNet's beat/downbeat activation network (BDA) in our own streaming runtime.

The network (Heydari et al., BeatNet, ISMIR 2021; weights CC BY 4.0, shipped in the ``BeatNet``
package) maps each 272-value feature frame (:mod:`processors.beat.features`) to softmax
probabilities over ``[beat, downbeat, non-beat]``::

    conv1d(1 -> 2, kernel 10) -> ReLU -> max-pool 2 -> flatten (262) -> linear 262 -> 150
    -> 2-layer unidirectional LSTM (150) -> linear 150 -> 3 -> softmax

Only the weight files are read (``BeatNet/models/model_{1,2,3}_weights.pt``, located with
``importlib.util.find_spec``): importing ``BeatNet.BeatNet`` pulls in madmom and pyaudio, which do
not import here. The LSTM state ``(h, c)`` is kept per stream. On the CPU, :class:`StreamBDA`
runs the network as plain tensor operations and advances any set of streams one frame per call
(:meth:`BeatNetActivation.infer_many`); on CUDA, :meth:`BDA.step` does the same with the module.
One loaded network per (model, device) is shared by all streams (:func:`shared_net`).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from beatbus.errors import DependencyError

from .backends import TEMPO_PRIOR
from .network import NetworkActivation

__all__ = ["ML_EXTRA_HINT", "weights_path", "BDA", "StreamBDA", "BeatNetActivation", "beatnet_activations", "shared_net"]

ML_EXTRA_HINT = "backend 'beatnet' needs torch and BeatNet: pip install 'beatbus[ml]'"

try:  # torch is an optional dependency (the ``ml`` extra)
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise DependencyError(ML_EXTRA_HINT) from exc


def weights_path(model: int = 1) -> Path:
    """Path of BeatNet's published ``model_<model>_weights.pt`` inside the installed package.

    Raises
    ------
    ImportError
        When the ``BeatNet`` package is not installed.
    ValueError
        When ``model`` is not 1, 2 or 3.
    """
    if model not in (1, 2, 3):
        raise ValueError(f"model={model!r} must be 1, 2 or 3 (BeatNet's published weights)")
    spec = importlib.util.find_spec("BeatNet")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(ML_EXTRA_HINT)
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / f"model_{model}_weights.pt"
        if p.is_file():
            return p
    raise DependencyError(f"{ML_EXTRA_HINT} (no models/model_{model}_weights.pt in the installed BeatNet)")


class BDA(nn.Module):
    """BeatNet's BDA network with explicit per-stream LSTM state.

    Parameters
    ----------
    dim_in : int
        Feature values per frame (272).
    hidden : int
        LSTM width (150).
    num_layers : int
        LSTM layers (2).
    """

    def __init__(self, *, dim_in: int = 272, hidden: int = 150, num_layers: int = 2) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.hidden = hidden
        self.num_layers = num_layers
        self.conv1 = nn.Conv1d(1, 2, 10)
        self.linear0 = nn.Linear(2 * ((dim_in - 10 + 1) // 2), 150)
        self.lstm = nn.LSTM(input_size=150, hidden_size=hidden, num_layers=num_layers, batch_first=True)
        self.linear = nn.Linear(hidden, 3)

    @classmethod
    def from_beatnet(cls, model: int = 1, *, device: str = "cpu") -> BDA:
        """Load BeatNet's published weights (``model`` 1: trained without GTZAN)."""
        net = cls()
        state = torch.load(weights_path(model), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        return net.to(resolve_device(device)).eval()

    def initial_state(self, n_streams: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero LSTM state ``(h, c)``, each ``[shape=(num_layers, n_streams, hidden)]``."""
        dev = self.linear.weight.device
        z = torch.zeros(self.num_layers, n_streams, self.hidden, device=dev)
        return z, z.clone()

    def forward(
        self, feats: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Class probabilities for a batch of sequences.

        Parameters
        ----------
        feats : torch.Tensor [shape=(n_streams, n_frames, 272)]
        state : (h, c) or None
            LSTM state, each ``[shape=(2, n_streams, 150)]``; zeros when None.

        Returns
        -------
        probs : torch.Tensor [shape=(n_streams, n_frames, 3)]
            Softmax over ``[beat, downbeat, non-beat]``.
        state : (h, c)
            State after the last frame.
        """
        b, t, d = feats.shape
        x = feats.reshape(b * t, 1, d)
        x = F.max_pool1d(F.relu(self.conv1(x)), 2)
        x = self.linear0(x.flatten(1)).reshape(b, t, -1)
        if state is None:
            state = self.initial_state(b)
        x, state = self.lstm(x, state)
        return torch.softmax(self.linear(x), dim=-1), state

    @torch.inference_mode()
    def step(
        self,
        feats: np.ndarray | torch.Tensor,
        states: list[tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[np.ndarray, tuple[torch.Tensor, torch.Tensor]]:
        """Advance many streams by one frame each, in one batched call.

        Parameters
        ----------
        feats : array [shape=(n_streams, 272)]
            One feature frame per stream.
        states : list of (h, c) per stream, a stacked (h, c) with batch ``n_streams``, or None
            Per-stream states have shape ``(2, 1, 150)``.

        Returns
        -------
        probs : np.ndarray [shape=(n_streams, 3)]
            ``[beat, downbeat, non-beat]`` per stream.
        state : (h, c)
            Stacked new state ``[shape=(2, n_streams, 150)]``; ``split_state`` gives per-stream ones.
        """
        x = torch.as_tensor(np.asarray(feats, dtype=np.float32) if not torch.is_tensor(feats) else feats)
        x = x.to(self.linear.weight.device, torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"feats shape={tuple(x.shape)} must be (n_streams, {self.dim_in})")
        if isinstance(states, list):
            if len(states) != x.shape[0]:
                raise ValueError(f"len(states)={len(states)} must equal n_streams={x.shape[0]}")
            states = (torch.cat([s[0] for s in states], dim=1), torch.cat([s[1] for s in states], dim=1))
        probs, state = self(x[:, None, :], states)
        return probs[:, 0].cpu().numpy(), state

    @staticmethod
    def split_state(state: tuple[torch.Tensor, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Split a stacked ``(h, c)`` into per-stream states of shape ``(2, 1, 150)``."""
        h, c = state
        return [(h[:, i : i + 1], c[:, i : i + 1]) for i in range(h.shape[1])]


class _single_thread:
    """Run torch single-threaded inside: per-frame ops are too small to gain from intra-op threads,
    and on busy cores the extra threads spin (measured 9x more CPU per frame on a loaded 2-core box)."""

    def __enter__(self) -> None:
        self._n = torch.get_num_threads()
        if self._n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        if self._n != 1:
            torch.set_num_threads(self._n)


class StreamBDA:
    """The BDA network as plain tensor operations for streaming on the CPU, one stream or many.

    Each stream's LSTM state ``(h, c)`` is a numpy array the caller keeps; :meth:`step` advances
    any set of streams by one frame in one batched call. A call of the ``nn.Module`` with a
    one-frame sequence costs ~0.7 ms of framework overhead, the arithmetic ~0.9 MFLOP per frame and
    stream. The products run on torch's CPU kernels, not numpy's: numpy's bundled OpenBLAS picks a
    generic kernel on some CPUs (here: 'Prescott' on an AVX-512 Xeon) and is then 5-7x slower.
    Results match :class:`BDA` to ~1e-6.

    Parameters
    ----------
    net : BDA
        Source of the weights (copied to the CPU).
    """

    def __init__(self, net: BDA) -> None:
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
        self.conv_w, self.conv_b = sd["conv1.weight"], sd["conv1.bias"]
        self.w0, self.b0 = sd["linear0.weight"].T.contiguous(), sd["linear0.bias"]
        self.num_layers = net.num_layers
        self.hidden = net.hidden
        # input and recurrent weights stacked: one [x, h] @ w product per layer and frame
        self.w = [torch.cat([sd[f"lstm.weight_ih_l{k}"].T, sd[f"lstm.weight_hh_l{k}"].T]).contiguous()
                  for k in range(net.num_layers)]
        self.b = [sd[f"lstm.bias_ih_l{k}"] + sd[f"lstm.bias_hh_l{k}"] for k in range(net.num_layers)]
        self.w_out, self.b_out = sd["linear.weight"].T.contiguous(), sd["linear.bias"]

    def initial_state(self) -> np.ndarray:
        """Zero state ``[shape=(2, num_layers, hidden)]``: ``state[0]`` = h, ``state[1]`` = c."""
        return np.zeros((2, self.num_layers, self.hidden), dtype=np.float32)

    @torch.inference_mode()
    def embed(self, feats: np.ndarray) -> torch.Tensor:
        """Conv, ReLU, max-pool and first linear layer: ``(n, 272) -> (n, 150)``; rows are
        independent (frames of any streams)."""
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[:, None, :]
        with _single_thread():
            x = F.max_pool1d(F.relu(F.conv1d(x, self.conv_w, self.conv_b)), 2)
            return torch.addmm(self.b0, x.flatten(1), self.w0)

    @torch.inference_mode()
    def step(self, z: torch.Tensor, state: np.ndarray) -> np.ndarray:
        """Advance many streams one frame.

        Parameters
        ----------
        z : torch.Tensor [shape=(s, 150)]
            :meth:`embed` rows, one per stream.
        state : np.ndarray [shape=(s, 2, num_layers, hidden), dtype=float32]
            Per-stream ``(h, c)``; updated in place.

        Returns
        -------
        np.ndarray [shape=(s, 3)]
            Softmax over ``[beat, downbeat, non-beat]``.
        """
        hid = self.hidden
        st = torch.from_numpy(state)  # shares memory: the updates below land in ``state``
        x = z
        with _single_thread():
            for k in range(self.num_layers):
                g = torch.addmm(self.b[k], torch.cat([x, st[:, 0, k]], dim=1), self.w[k])  # i, f, g, o
                sig = torch.sigmoid(g)
                c = sig[:, hid : 2 * hid] * st[:, 1, k] + sig[:, :hid] * torch.tanh(g[:, 2 * hid : 3 * hid])
                x = sig[:, 3 * hid :] * torch.tanh(c)
                st[:, 1, k] = c
                st[:, 0, k] = x
            return torch.softmax(torch.addmm(self.b_out, x, self.w_out), dim=1).numpy()

    def __call__(self, feats: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``[shape=(n, 3)]`` for one stream's ``feats [shape=(n, 272)]``, and the new
        state (the given one is not modified)."""
        z = self.embed(feats)
        st = np.array(state, dtype=np.float32)[None]  # (1, 2, layers, hidden)
        out = np.empty((z.shape[0], 3), dtype=np.float32)
        for i in range(z.shape[0]):  # the recurrence is sequential in time
            out[i] = self.step(z[i : i + 1], st)[0]
        return out, st[0]


def resolve_device(device: str) -> torch.device:
    """``"cpu"`` or ``"cuda"`` (only when available), else ``ValueError``."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' requested but torch.cuda.is_available() is False: use device='cpu'")
        return torch.device("cuda")
    raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'")


class BeatNetActivation(NetworkActivation):
    """Streaming BeatNet activation for one stream: features -> BDA -> ``[beat, downbeat]``.

    Parameters
    ----------
    model : int
        BeatNet weight set (1, 2 or 3). Only model 1 may be scored on GTZAN.
    device : {"cpu", "cuda"}
    silence_db : float
        Frames whose RMS is below this level (dBFS) are gated as silence.
    net : BDA or None
        Share one loaded network between many processors.
    onset_weight : float or None
        0..1 share of the normalised spectral flux mixed in (see
        :class:`~processors.beat.network.NetworkActivation`).
    """

    name = "beatnet"
    # the sharper network activations want a steadier tempo than the flux and a wider non-beat share;
    # transition_lambda, act_floor and max_bpm were chosen by nested leave-one-group-out over
    # shared/data/beats + beats_more (the same values in 15 of 16 folds; README "Beats: accuracy")
    # tempo_prior: narrower than the offline decoder's TEMPO_PRIOR (sigma 0.35 octave, not 0.5): nested
    # leave-one-group-out chose it in every fold, held-out F 0.720 -> 0.725, tempo Acc1 0.765 -> 0.778
    # (README Accuracy); for dsp and small it moved little and cost small's tempo Acc2 on beats/
    tracker_settings: ClassVar[Mapping[str, Any]] = {"transition_lambda": 70.0, "observation_lambda": 8,
                                                     "act_floor": 0.03, "max_bpm": 290.0,
                                                     "time_offset": 0.015, "tempo_prior": (TEMPO_PRIOR[0], 0.35)}

    def __init__(
        self,
        *,
        model: int = 1,
        device: str = "cpu",
        silence_db: float = NetworkActivation.SILENCE_DB,
        net: BDA | None = None,
        onset_weight: float | None = None,
    ) -> None:
        super().__init__(silence_db=silence_db, onset_weight=onset_weight)
        self.net = net if net is not None else shared_net(model, resolve_device(device).type)
        self.device = self.net.linear.weight.device.type
        # per-frame streaming on the CPU runs as plain tensor ops (the nn.Module call overhead dominates there)
        self._np = _stream_net(self.net) if self.device == "cpu" else None
        self.reset()

    @staticmethod
    @torch.inference_mode()
    def infer_many(acts: list[BeatNetActivation], feats: list[np.ndarray]) -> list[np.ndarray]:
        """Network probabilities ``[shape=(n_i, 3)]`` for many streams (equal :attr:`batch_key`),
        one batched step per frame; advances each stream's LSTM state."""
        counts = [f.shape[0] for f in feats]
        out = [np.empty((n, 3), dtype=np.float32) for n in counts]
        npnet = acts[0]._np
        if npnet is not None and sum(counts):
            z = npnet.embed(np.concatenate(feats))
            starts = np.cumsum([0, *counts[:-1]])
            if all(n == 1 for n in counts):  # the live case: one frame per stream, rows in order
                state = np.stack([a.state for a in acts])
                probs = npnet.step(z, state)
                for j, a in enumerate(acts):
                    a.state = state[j]
                    out[j][0] = probs[j]
                return out
        for i in range(max(counts, default=0)):  # frames in time order; streams side by side
            idx = [j for j, n in enumerate(counts) if n > i]
            if npnet is not None:
                state = np.stack([acts[j].state for j in idx])
                rows = starts[idx] + i if len(idx) < len(acts) else starts + i
                probs = npnet.step(z[torch.from_numpy(rows)], state)
                for r, j in enumerate(idx):
                    acts[j].state = state[r]
            else:
                probs, stacked = acts[0].net.step(np.stack([feats[j][i] for j in idx]), [acts[j].state for j in idx])
                for j, st in zip(idx, BDA.split_state(stacked)):
                    acts[j].state = st
            for r, j in enumerate(idx):
                out[j][i] = probs[r]
        return out


@lru_cache(maxsize=8)
def shared_net(model: int = 1, device: str = "cpu") -> BDA:
    """One loaded network per (model, device), shared by every stream (the state is per stream)."""
    return BDA.from_beatnet(model, device=device)


@lru_cache(maxsize=8)
def _stream_net(net: BDA) -> StreamBDA:
    return StreamBDA(net)


def beatnet_activations(y: np.ndarray, *, model: int = 1, device: str = "cpu", net: BDA | None = None) -> np.ndarray:
    """Whole-signal activations like BeatNet's offline mode.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono audio at 22050 Hz.

    Returns
    -------
    np.ndarray [shape=(ceil(n / 441), 2), dtype=float32]
        ``[beat, downbeat]`` probabilities at 50 frames/s (frame k centred on sample k*441).
    """
    from .features import beatnet_features

    net = net if net is not None else BDA.from_beatnet(model, device=device)
    feats = torch.from_numpy(beatnet_features(y)).to(net.linear.weight.device)[None]
    with torch.inference_mode():
        probs, _ = net(feats)
    return probs[0, :, :2].cpu().numpy().astype(np.float32)
