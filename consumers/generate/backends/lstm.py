"""The LSTM composer: a causal LSTM + masked self-attention over music tokens (torch + music21).

Architecture (:class:`ComposerNet`)::

    token ids -> Embedding(E) -> LSTM(H, unidirectional) -> causal multi-head self-attention
              -> + residual -> LayerNorm -> Linear(vocab)

The seed's bidirectional LSTM saw the future of every position; here each position sees
only its past (the LSTM is unidirectional and the attention mask is upper-triangular), so
sampling one token at a time is the same computation as training. Sampling is incremental:
the LSTM state and the attention keys (past LSTM outputs) are carried, O(t) per token.

:func:`train` is reproducible with a seed; :class:`Composer` bundles weights, vocabulary,
hyper-parameters and a few corpus excerpts used as seeds, saved as one ``.pt`` file.
"""
from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from beatbus.log import get_logger

from ..errors import InvalidRequest, ModelUnavailable
from ..models import torch_device
from .lstm_tokens import BOS, SPECIALS, Vocabulary, tokenize_score, tokens_to_stream

__all__ = ["ComposerConfig", "ComposerNet", "Composer", "train", "DEFAULT_CHECKPOINT", "sample_next",
           "midi_seed_tokens"]

log = get_logger("generate.lstm")
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "lstm_bach.pt"


@dataclass
class ComposerConfig:
    embed: int = 64
    hidden: int = 128
    layers: int = 1
    heads: int = 4
    dropout: float = 0.2
    seq_len: int = 64


def _net_class():
    import torch
    from torch import nn

    class _ComposerNet(nn.Module):
        def __init__(self, vocab_size: int, cfg: ComposerConfig):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, cfg.embed)
            self.lstm = nn.LSTM(cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                                dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            self.attn = nn.MultiheadAttention(cfg.hidden, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.norm = nn.LayerNorm(cfg.hidden)
            self.drop = nn.Dropout(cfg.dropout)
            self.out = nn.Linear(cfg.hidden, vocab_size)

        def forward(self, ids):
            """ids (batch, T) -> logits (batch, T, vocab); position t sees positions <= t only."""
            h, _ = self.lstm(self.embed(ids))
            t = ids.shape[1]
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=ids.device), diagonal=1)
            a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
            return self.out(self.drop(self.norm(h + a)))

        def step(self, ids, state=None, memory=None):
            """Incremental forward of new tokens ids (1, n) given carried (state, memory)."""
            h, state = self.lstm(self.embed(ids), state)
            memory = h if memory is None else torch.cat([memory, h], dim=1)
            t, n = memory.shape[1], h.shape[1]
            # Each new query may attend to memory up to its own position.
            mask = torch.ones(n, t, dtype=torch.bool, device=ids.device).triu(diagonal=t - n + 1)
            a, _ = self.attn(h, memory, memory, attn_mask=mask, need_weights=False)
            return self.out(self.norm(h + a)), state, memory

    return _ComposerNet


def ComposerNet(vocab_size: int, cfg: ComposerConfig):  # noqa: N802  (a factory that reads as the class)
    """Build the network (torch is imported lazily so the package imports without it)."""
    return _net_class()(vocab_size, cfg)


def sample_next(logits, *, temperature: float, top_k: int, top_p: float, banned: list[int], generator) -> int:
    """Sample one id from 1-D logits with temperature, top-k (0: off) and top-p (0 or 1: off)."""
    import torch

    logits = logits.float().clone()
    logits[banned] = -float("inf")
    logits = logits / max(temperature, 1e-4)
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = -float("inf")
    probs = torch.softmax(logits, dim=-1)
    if 0.0 < top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p       # always keeps the most likely
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Composer:
    """A trained composer: network, vocabulary, config, seed excerpts and training notes."""
    net: object
    vocab: Vocabulary
    config: ComposerConfig
    seeds: list[list[str]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    # -- persistence --------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        buf = io.BytesIO()
        torch.save({"format": "beatbus-lstm-composer/1", "state_dict": state, "vocab": self.vocab.itos,
                    "config": asdict(self.config), "seeds": self.seeds, "meta": self.meta}, buf)
        path.write_bytes(buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str = "cpu") -> Composer:
        import torch

        path = Path(path) if path else DEFAULT_CHECKPOINT
        try:
            doc = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ModelUnavailable(f"LSTM checkpoint {path} not found (train one: beatbus generate train-lstm)") from None
        except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a corrupt file
            raise ModelUnavailable(f"LSTM checkpoint {path} is unreadable: {str(exc)[:200]}") from None
        if doc.get("format") != "beatbus-lstm-composer/1":
            raise ModelUnavailable(f"{path} is not a beatbus LSTM composer checkpoint")
        vocab = Vocabulary(doc["vocab"][len(SPECIALS):])
        cfg = ComposerConfig(**doc["config"])
        net = ComposerNet(len(vocab), cfg)
        net.load_state_dict(doc["state_dict"])
        net.to(torch_device(device)).eval()
        return cls(net, vocab, cfg, doc.get("seeds", []), doc.get("meta", {}))

    # -- generation ---------------------------------------------------------------
    def sample(self, n: int, *, seed_tokens: list[str] | None = None, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 0.0, seed: int | None = None, until: Callable[[list[str]], bool] | None = None,
               progress: Callable[[int, int], None] | None = None) -> tuple[list[str], dict]:
        """Sample up to ``n`` tokens after the seed tokens (a random corpus excerpt when None).

        Stops early when ``until(tokens)`` is true. Returns (new tokens, info with
        ``tokens_per_second``).
        """
        import torch

        gen = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**31))
        if seed_tokens is None:
            if self.seeds:
                seed_tokens = self.seeds[int(torch.randint(len(self.seeds), (1,), generator=gen))]
            else:
                seed_tokens = []
        ids = [self.vocab.stoi[BOS]] + self.vocab.encode(seed_tokens[-self.config.seq_len:])
        banned = [self.vocab.stoi[s] for s in SPECIALS]
        device = next(self.net.parameters()).device
        out: list[str] = []
        started = time.perf_counter()
        with torch.no_grad():
            logits, state, memory = self.net.step(torch.tensor([ids], device=device))
            for i in range(n):
                nxt = sample_next(logits[0, -1].cpu(), temperature=temperature, top_k=top_k, top_p=top_p,
                                  banned=banned, generator=gen)
                out.append(self.vocab.itos[nxt])
                if progress is not None:
                    progress(i + 1, n)
                if until is not None and until(out):
                    break
                if memory.shape[1] >= self.config.seq_len:   # attend over the span it was trained on
                    memory = memory[:, -(self.config.seq_len - 1):]
                logits, state, memory = self.net.step(torch.tensor([[nxt]], device=device), state, memory)
        seconds = time.perf_counter() - started
        return out, {"tokens": len(out), "seconds": round(seconds, 4),
                     "tokens_per_second": round(len(out) / seconds, 1) if seconds > 0 else None}

    def compose(self, *, tempo: float, meter: int = 4, key: str | None = None, bars: int = 8,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0, seed: int | None = None,
                seed_tokens: list[str] | None = None, progress: Callable[[int, int], None] | None = None):
        """Compose ``bars`` bars after ``seed_tokens`` (see :func:`midi_seed_tokens`; None: a corpus excerpt).

        Returns (music21 Stream, info incl. ``notes``: note and chord onsets written).
        """
        total = bars * meter

        def filled(tokens: list[str]) -> bool:
            return sum(float(t.rsplit("_", 1)[1]) for t in tokens) >= total

        tokens, info = self.sample(int(total * 8) + 16, seed_tokens=seed_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, until=filled, progress=progress)
        score = tokens_to_stream(tokens, tempo=tempo, meter=meter, key=key, bars=bars)
        info["notes"] = len(score.flatten().notes)
        return score, info


def midi_seed_tokens(path: str | Path, *, limit: int = 64) -> list[str]:
    """The last ``limit`` tokens of a MIDI (or MusicXML) file, to seed :meth:`Composer.compose`."""
    from music21 import converter

    try:
        tokens = tokenize_score(converter.parse(str(path)))
    except Exception as exc:  # noqa: BLE001 - music21 raises many types for a file it cannot parse
        raise InvalidRequest(f"seed MIDI {Path(path).name} does not parse: {str(exc)[:200]}") from None
    if not tokens:
        raise InvalidRequest(f"seed MIDI {Path(path).name} has no notes")
    return tokens[-limit:]


def _windows(pieces_ids: list[list[int]], seq_len: int, bos: int) -> np.ndarray:
    stream: list[int] = []
    for ids in pieces_ids:
        stream += [bos] + ids
    stride = max(1, seq_len // 2)
    rows = [stream[i:i + seq_len + 1] for i in range(0, max(1, len(stream) - seq_len), stride)]
    rows = [r for r in rows if len(r) == seq_len + 1]
    return np.array(rows, dtype=np.int64).reshape(-1, seq_len + 1)


def train(pieces: list[list[str]], *, epochs: int = 10, config: ComposerConfig | None = None, min_count: int = 2,
          batch_size: int = 32, lr: float = 3e-3, seed: int = 0, device: str = "cpu", val_fraction: float = 0.1,
          log_every: Callable[[dict], None] | None = None) -> Composer:
    """Train a composer on token lists; reproducible for a given seed (on CPU)."""
    import torch

    if not pieces:
        raise InvalidRequest("no training pieces")
    cfg = config or ComposerConfig()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    order = list(range(len(pieces)))
    random.Random(seed).shuffle(order)
    n_val = int(len(pieces) * val_fraction) if len(pieces) >= 10 else 0
    val_p, train_p = [pieces[i] for i in order[:n_val]], [pieces[i] for i in order[n_val:]]
    vocab = Vocabulary.build(train_p, min_count=min_count)
    bos = vocab.stoi[BOS]
    data = _windows([vocab.encode(p) for p in train_p], cfg.seq_len, bos)
    val = _windows([vocab.encode(p) for p in val_p], cfg.seq_len, bos) if val_p else None
    if len(data) == 0:
        raise InvalidRequest(f"corpus too short for seq_len={cfg.seq_len}")
    dev = torch_device(device)
    net = ComposerNet(len(vocab), cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=vocab.stoi[SPECIALS[0]])
    gen = torch.Generator().manual_seed(seed)
    history = []
    best: tuple[float, int, dict] | None = None          # (val loss, epoch, weights): early stopping
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(len(data), generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(data), batch_size):
            batch = torch.from_numpy(data[perm[i:i + batch_size].numpy()]).to(dev)
            logits = net(batch[:, :-1])
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(batch)
            count += len(batch)
        row = {"epoch": epoch, "loss": round(total / count, 4)}
        if val is not None and len(val):
            net.eval()
            with torch.no_grad():
                vb = torch.from_numpy(val).to(dev)
                vl = net(vb[:, :-1])
                row["val_loss"] = round(float(loss_fn(vl.reshape(-1, vl.shape[-1]), vb[:, 1:].reshape(-1))), 4)
                row["val_accuracy"] = round(float((vl.argmax(-1) == vb[:, 1:]).float().mean()), 4)
            if best is None or row["val_loss"] < best[0]:
                best = (row["val_loss"], epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
        history.append(row)
        if log_every:
            log_every(row)
    if best is not None:
        net.load_state_dict(best[2])         # the weights that generalised best, not the last ones
    net.eval()
    rng = random.Random(seed + 1)
    seeds = []
    for _ in range(min(32, len(train_p))):
        p = train_p[rng.randrange(len(train_p))]
        start = rng.randrange(max(1, len(p) - 16))
        seeds.append(p[start:start + 16])
    meta = {"pieces": len(train_p), "val_pieces": len(val_p), "windows": int(len(data)), "vocab": len(vocab),
            "epochs": epochs, "seed": seed, "min_count": min_count, "history": history,
            "best_epoch": best[1] if best else epochs, "best_val_loss": best[0] if best else None,
            "train_seconds": round(time.perf_counter() - started, 1),
            "parameters": int(sum(p.numel() for p in net.parameters()))}
    return Composer(net.cpu() if dev.type != "cpu" else net, vocab, cfg, seeds, meta)
