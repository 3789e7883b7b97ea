"""Model loading for workers: offline ``from_pretrained`` and a per-process cache.

A worker loads each model once and keeps it (SimpleWorker style: jobs run in the worker
process, so the weights stay in memory and on the GPU between jobs). Nothing is ever
downloaded: ``local_files_only=True`` always, and ``HF_HUB_OFFLINE=1`` is set unless the
environment says otherwise. A model id works from a local directory or a warm Hugging
Face cache; anything else is a one-line :class:`~.errors.ModelUnavailable`.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from beatbus.errors import ConfigError
from beatbus.log import get_logger

from .errors import ModelUnavailable

__all__ = ["ModelCache", "from_pretrained", "torch_device", "MODEL_ENV"]

log = get_logger("generate.models")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL_ENV = {"musicgen": "BEATBUS_MUSICGEN_MODEL", "musicgen-melody": "BEATBUS_MUSICGEN_MELODY_MODEL",
             "clap": "BEATBUS_CLAP_MODEL"}


def torch_device(device: str):
    """A torch device for ``cpu``/``cuda`` (``cuda:N`` allowed); ConfigError when CUDA is absent."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch {torch.__version__} sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device {device!r} must be cpu, cuda or cuda:N")
    return torch.device(device)


def from_pretrained(cls: Any, name: str, *, what: str, kind: str, **kwargs) -> Any:
    """``cls.from_pretrained(name, local_files_only=True)`` with a clear error when it is not there."""
    local = Path(name).expanduser()
    source = str(local) if local.exists() else name
    try:
        return cls.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        env = MODEL_ENV.get(kind, "")
        hint = f" (set {env}=DIR" if env else " (give a local directory"
        raise ModelUnavailable(
            f"{what} {name!r} is not available offline{hint} with weights saved by save_pretrained, "
            f"or warm the Hugging Face cache): {str(exc).splitlines()[0][:200]}") from None


class ModelCache:
    """Models loaded once per process, keyed by (kind, name, device)."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, name: str, device: str, loader: Callable[[], Any]) -> Any:
        key = (kind, name, device)
        with self._lock:
            if key not in self._models:
                log.info("loading model", extra={"kind": kind, "model": name, "device": device})
                self._models[key] = loader()
            return self._models[key]

    def loaded(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
