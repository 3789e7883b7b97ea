"""Which models this worker can run, found without loading any (``beatbus worker`` advertises them).

A model is available from one of:

- ``shipped``: the LSTM checkpoint in the package (or the configured ``lstm_checkpoint``);
- ``local``: a directory saved with ``save_pretrained`` (``BEATBUS_MUSICGEN_MODEL=DIR`` ...);
- ``cache``: a hub id already in the Hugging Face cache (``HF_HOME``);
- ``hub``: a hub id the hub serves: downloaded into the cache on its first job.

Anything else is unavailable, with a one-line reason. The hub is asked once per model and
not at all once it proved unreachable, so a machine without internet starts in a moment.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .config import GenerateConfig
from .models import hub_problem, in_hf_cache, looks_like_path

__all__ = ["KINDS", "Availability", "check_models", "model_name"]

KINDS = ("lstm", "musicgen", "musicgen-melody", "clap")
_FIELDS = {"musicgen": "musicgen_model", "musicgen-melody": "musicgen_melody_model", "clap": "clap_model"}


@dataclass(frozen=True)
class Availability:
    kind: str
    model: str
    source: str = ""          # shipped | local | cache | hub; empty when unavailable
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.source)


def model_name(config: GenerateConfig, kind: str) -> str:
    """The configured model (directory, hub id or checkpoint) of ``kind``."""
    if kind == "lstm":
        from .backends.lstm import DEFAULT_CHECKPOINT

        return config.lstm_checkpoint or str(DEFAULT_CHECKPOINT)
    return getattr(config, _FIELDS[kind])


def _lstm(config: GenerateConfig) -> Availability:
    path = model_name(config, "lstm")
    if not Path(path).is_file():
        return Availability("lstm", path, reason=f"LSTM checkpoint {path} does not exist")
    return Availability("lstm", path, "local" if config.lstm_checkpoint else "shipped")


def check_models(config: GenerateConfig, kinds=KINDS) -> list[Availability]:
    """Availability of each of ``kinds`` under ``config``, in order."""
    out, hub_down = [], ""
    for kind in kinds:
        if kind == "lstm":
            out.append(_lstm(config))
            continue
        name = model_name(config, kind)
        if importlib.util.find_spec("transformers") is None:
            out.append(Availability(kind, name, reason="transformers is not installed (the generation extra)"))
        elif looks_like_path(name):
            local = Path(name).expanduser()
            out.append(Availability(kind, name, "local") if (local / "config.json").is_file() else
                       Availability(kind, name, reason=f"directory {local} does not exist" if not local.exists()
                                    else f"directory {local} holds no model saved by save_pretrained (config.json)"))
        elif in_hf_cache(name):
            out.append(Availability(kind, name, "cache"))
        else:
            problem = hub_down or hub_problem(name)
            if problem and "unreachable" in problem:
                hub_down = problem            # one timeout, not one per model
            out.append(Availability(kind, name, reason=f"not in the Hugging Face cache and {problem}")
                       if problem else Availability(kind, name, "hub"))
    return out
