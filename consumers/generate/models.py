"""Model loading for workers: local directory, warm Hugging Face cache, or a first-use download.

A worker loads each model once and keeps it (SimpleWorker style: jobs run in the worker
process, so the weights stay in memory and on the GPU between jobs). :func:`from_pretrained`
tries, in order: a local directory (``save_pretrained`` layout), the Hugging Face cache
(``HF_HOME``; no network at all), then a download into that cache with the hub's progress
bars on a terminal (a log line before and after in a pipe). When none works the error is
one line (:class:`~.errors.ModelUnavailable`) naming the cause: no such directory, the hub
unreachable, ``HF_HUB_OFFLINE`` set, no such model on the hub.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beatbus.errors import ConfigError
from beatbus.log import get_logger

from .errors import ModelUnavailable

__all__ = ["ModelCache", "from_pretrained", "torch_device", "MODEL_ENV", "looks_like_path", "in_hf_cache",
           "hub_problem", "hub_snapshot"]

log = get_logger("generate.models")
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


def looks_like_path(name: str) -> bool:
    """A directory name rather than a hub id (``org/name`` has one slash and no leading ``/ . ~``)."""
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1


def in_hf_cache(name: str) -> bool:
    """Whether hub model ``name`` has a snapshot in the Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:                    # not a valid repo id
        return False


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def hub_problem(name: str) -> str | None:
    """None when the Hugging Face hub serves model ``name``; otherwise why not, in one line."""
    return _hub_files(name)[1]


def _hub_files(name: str) -> tuple[list[str], str | None]:
    """(the files of hub model ``name``, None), or ([], why the hub does not serve it, in one line).

    One metadata request with the hub's own timeout (``HF_HUB_ETAG_TIMEOUT``), no retries:
    an unreachable hub costs a moment, not the download's minute of back-off.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return [], "HF_HUB_OFFLINE is set"
    try:
        info = HfApi().model_info(name, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        return [], f"model {name!r} is gated on the hub: accept its licence there and set HF_TOKEN"
    except RepositoryNotFoundError:
        return [], f"the hub at {constants.ENDPOINT} has no model {name!r} (private ones need HF_TOKEN)"
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "an error")
        return [], f"the hub at {constants.ENDPOINT} answered {status} for {name!r}"
    except ValueError as exc:             # huggingface_hub's HFValidationError: not a repo id
        return [], f"{name!r} is neither a directory nor a hub model id ({str(exc).splitlines()[0][:120]})"
    except Exception as exc:              # noqa: BLE001 - transport errors of whichever HTTP client the hub uses
        return [], f"the Hugging Face hub at {constants.ENDPOINT} is unreachable ({_root_cause(exc)})"
    return [s.rfilename for s in info.siblings or []], None


# Formats transformers never reads here (TensorFlow, Flax, ONNX, ...); PyTorch .bin weights too when
# the repo has safetensors (musicgen-small has both: half its download would be wasted).
_FOREIGN = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.gguf", "*.mlmodel", "*.tar.gz", "flax_*", "tf_*"]
_DUPLICATES = ["*.bin", "*.pt", "*.pth", "*.ckpt"]


def _skipped(files: list[str] | None) -> list[str]:
    if files is None or any(f.endswith(".safetensors") for f in files):
        return _FOREIGN + _DUPLICATES
    return _FOREIGN


def hub_snapshot(name: str, *, what: str, hint: str = "") -> str:
    """The folder of hub model ``name``, complete: from the cache without any network, else downloaded
    into it (``snapshot_download``: model, tokenizer and processor files together, resumable).

    The hub's progress bars show on a terminal; in a pipe a log line says the download starts and ends.
    """
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(name, local_files_only=True, ignore_patterns=_skipped(None))
    except (OSError, ValueError):         # not cached, or an interrupted download (the hub's tree cache knows)
        pass
    files, problem = _hub_files(name)
    if problem:
        raise ModelUnavailable(f"{what} {name!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                               f"and cannot be downloaded: {problem}{hint}")
    log.info("downloading model into the Hugging Face cache (first use)",
             extra={"model": name, "cache": constants.HF_HUB_CACHE})
    started = time.monotonic()
    try:
        with _bars_on_terminal_only(), _job_timeout_paused():
            folder = snapshot_download(name, ignore_patterns=_skipped(files),
                                       etag_timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as exc:              # noqa: BLE001 - the hub's and its HTTP client's errors alike
        raise ModelUnavailable(f"downloading {what} {name!r} failed: {_root_cause(exc)}{hint}") from None
    log.info("model downloaded", extra={"model": name, "seconds": round(time.monotonic() - started, 1)})
    return folder


@contextlib.contextmanager
def _bars_on_terminal_only():
    """Download and loading progress bars on a terminal only; in a pipe (journald) log lines say it."""
    from transformers.utils import logging as hf_logging

    quiet = not sys.stderr.isatty() and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()          # transformers' bars and the hub's
    try:
        yield
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _job_timeout_paused():
    """rq times a job with SIGALRM; a first-use download is not the job's work, so the alarm waits
    for it (a 2 GB download would otherwise eat a 10 s piece's timeout)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    left = signal.alarm(0)
    try:
        yield
    finally:
        if left:
            signal.alarm(left)


def from_pretrained(cls: Any, name: str, *, what: str, kind: str, **kwargs) -> Any:
    """``cls.from_pretrained`` from a local directory, or from the hub model's complete snapshot in the
    Hugging Face cache (downloaded there first if need be, :func:`hub_snapshot`).

    Raises
    ------
    ModelUnavailable
        One line: the directory is missing or unloadable, or the model is neither cached nor
        downloadable (the reason the hub gave, or that it is unreachable).
    """
    env = MODEL_ENV.get(kind, "")
    hint = f"; or set {env}=DIR (saved by save_pretrained)" if env else ""
    if looks_like_path(name):
        # the user named this directory (by a flag, the TOML or the variable): say what belongs there
        local = Path(name).expanduser()
        where = "; give a directory saved by save_pretrained, or a Hugging Face model id"
        if not local.exists():
            raise ModelUnavailable(f"{what} directory {local} does not exist{where}")
        try:
            with _bars_on_terminal_only():
                return cls.from_pretrained(str(local), local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"{what} in {local} cannot be loaded ({_first_line(exc)}){where}") from None
    folder = hub_snapshot(name, what=what, hint=hint)
    try:
        with _bars_on_terminal_only():
            return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{what} {name!r} (cached in {folder}) cannot be loaded ({_first_line(exc)})"
                               f"{hint}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


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
