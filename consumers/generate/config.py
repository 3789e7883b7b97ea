"""Configuration of the generation stage: policy, models, limits, job timing, storage.

Precedence (later wins), as for :func:`beatbus.config.load_settings`: built-in defaults <
the ``[generate]`` table of the TOML file (``--config`` / ``BEATBUS_CONFIG``) < environment
(``BEATBUS_GENERATE_<KEY>``; plus ``BEATBUS_MUSICGEN_MODEL``, ``BEATBUS_MUSICGEN_MELODY_MODEL``,
``BEATBUS_CLAP_MODEL``, ``BEATBUS_STATE_DIR`` and systemd's ``STATE_DIRECTORY``) < flags.

Example TOML::

    [generate]
    policy = "bars"
    every_bars = 32
    musicgen_model = "/srv/models/musicgen-small"
    job_timeout_factor = 4.0      # a GPU worker: ~4 s of compute per second of audio, at most

Model ids are Hugging Face names or local directories; a name not in the Hugging Face cache is
downloaded into it by the worker on first use (:mod:`.models`), unless ``HF_HUB_OFFLINE=1``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from beatbus import keys
from beatbus.config import layered, state_dir
from beatbus.deprecation import deprecated
from beatbus.errors import ConfigError

__all__ = ["GenerateConfig", "load_generate_config", "DESCRIPTIONS", "default_state_dir", "job_timeout",
           "SECTION_LABELS"]

M = msgspec.Meta
SECTION_LABELS = ("intro", "verse", "chorus", "bridge", "outro")
# settings whose environment name is not BEATBUS_GENERATE_<KEY>: the model locations (a worker's too)
# and the state directory every stage shares; BEATBUS_GENERATE_<KEY> still works for them, and says so
_ENV_ALIASES = {"musicgen_model": "BEATBUS_MUSICGEN_MODEL", "musicgen_melody_model": "BEATBUS_MUSICGEN_MELODY_MODEL",
                "clap_model": "BEATBUS_CLAP_MODEL", "state_dir": "BEATBUS_STATE_DIR"}


class GenerateConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    state_dir: str = ""
    queue: Annotated[str, M(pattern=keys.NAME_PATTERN)] = "beatbus-generate"
    policy: Literal["section", "bars", "api"] = "section"
    section_labels: list[Literal["intro", "verse", "chorus", "bridge", "outro"]] = \
        msgspec.field(default_factory=lambda: ["chorus", "bridge"])
    every_bars: Annotated[int, M(ge=1, le=4096)] = 16
    capture_seconds: Annotated[float, M(ge=0.0, le=30.0)] = 10.0
    kind: Literal["musicgen", "lstm"] = "musicgen"
    melody: bool = False
    duration: Annotated[float, M(ge=5.0, le=120.0)] = 10.0
    prompt: Annotated[str, M(max_length=500)] = ""
    musicgen_engine: Literal["transformers", "audiocraft"] = "transformers"
    musicgen_model: str = "facebook/musicgen-small"
    musicgen_melody_model: str = "facebook/musicgen-melody"
    clap_model: str = "laion/clap-htsat-unfused"
    lstm_checkpoint: str = ""
    max_upload_bytes: Annotated[int, M(ge=1024, le=1 << 31)] = 25 << 20
    max_upload_seconds: Annotated[float, M(gt=0.0, le=3600.0)] = 600.0
    min_upload_seconds: Annotated[float, M(ge=0.0, le=60.0)] = 0.5
    job_timeout_base: Annotated[float, M(ge=1.0, le=86400.0)] = 120.0
    job_timeout_factor: Annotated[float, M(ge=0.0, le=1000.0)] = 30.0
    result_ttl: Annotated[int, M(ge=60, le=90 * 86400)] = 86400
    upload_ttl: Annotated[int, M(ge=60, le=365 * 86400)] = 7 * 86400
    failure_ttl: Annotated[int, M(ge=60, le=365 * 86400)] = 7 * 86400
    retries: Annotated[int, M(ge=0, le=10)] = 2
    retry_interval: Annotated[int, M(ge=0, le=3600)] = 10
    window_seconds: Annotated[float, M(ge=2.0, le=30.0)] = 30.0
    overlap_seconds: Annotated[float, M(ge=0.5, le=20.0)] = 10.0
    loudness_lufs: Annotated[float, M(ge=-40.0, le=-5.0)] = -14.0
    heartbeat: Annotated[float, M(ge=0.2, le=60.0)] = 10.0
    abandon_after: Annotated[float, M(ge=1.0, le=3600.0)] = 45.0
    embed_uploads: bool = True
    torch_threads: Annotated[int, M(ge=0, le=256)] = 0

    def __post_init__(self) -> None:
        if self.overlap_seconds >= self.window_seconds:
            raise ConfigError(f"generate overlap_seconds={self.overlap_seconds} must be below "
                              f"window_seconds={self.window_seconds}")
        if self.abandon_after <= self.heartbeat:
            raise ConfigError(f"generate abandon_after={self.abandon_after} must exceed heartbeat={self.heartbeat}")

    @property
    def state_path(self) -> Path:
        """The state directory (created on first use by :class:`~consumers.generate.storage.Store`)."""
        return Path(self.state_dir) if self.state_dir else default_state_dir()


DESCRIPTIONS: dict[str, str] = {
    "state_dir": "Directory for uploads, results and embeddings (also BEATBUS_STATE_DIR; systemd STATE_DIRECTORY).",
    "queue": "rq queue name generation jobs go to.",
    "policy": "When the stream consumer queues a job: section (confirmed section_labels), bars (every_bars), api.",
    "section_labels": "Confirmed sections that trigger a job under policy=section.",
    "every_bars": "Bars between jobs under policy=bars.",
    "capture_seconds": "Seconds of the source's latest audio captured as conditioning (0: none).",
    "kind": "What stream-triggered jobs make: musicgen (audio) | lstm (MIDI).",
    "melody": "Stream-triggered MusicGen jobs use MusicGen-Melody conditioned on the captured audio.",
    "duration": "Seconds of music a stream-triggered job generates (5-120).",
    "prompt": "Text prepended to the prompt built from the stream's conditioning.",
    "musicgen_engine": "transformers (default) or audiocraft (only if importable; it pins torch 2.1).",
    "musicgen_model": "MusicGen model: local directory or HF id, fetched on first use (also BEATBUS_MUSICGEN_MODEL).",
    "musicgen_melody_model": "MusicGen-Melody model (also BEATBUS_MUSICGEN_MELODY_MODEL).",
    "clap_model": "CLAP model for embeddings (also BEATBUS_CLAP_MODEL).",
    "lstm_checkpoint": "LSTM composer checkpoint (.pt); empty: the one shipped in the package.",
    "max_upload_bytes": "Largest upload accepted (bytes).",
    "max_upload_seconds": "Longest upload accepted (seconds of audio).",
    "min_upload_seconds": "Shortest upload accepted (seconds of audio).",
    "job_timeout_base": "Job timeout: this many seconds ...",
    "job_timeout_factor": "... plus this many per second of requested audio.",
    "result_ttl": "Seconds finished results (rq record and files) are kept.",
    "upload_ttl": "Seconds uploads and captured stream audio (with their embeddings) are kept.",
    "failure_ttl": "Seconds failed jobs stay in rq's failed registry.",
    "retries": "Retries of a job after a transient failure or a worker that died mid-job.",
    "retry_interval": "Seconds before a retry (needs the worker's scheduler; 0 re-queues at once).",
    "window_seconds": "MusicGen window; longer durations continue window by window.",
    "overlap_seconds": "Audio of the previous window used as the prompt of the next.",
    "loudness_lufs": "Integrated loudness (ITU-R BS.1770) generated audio is normalised to.",
    "heartbeat": "Seconds between a busy worker's heartbeats.",
    "abandon_after": "A job whose worker sent no heartbeat for this long is failed or retried.",
    "embed_uploads": "Queue a CLAP embedding job for every upload.",
    "torch_threads": "Torch intra-op threads in a worker (0: torch's default; 1 suits small models on shared cores).",
}


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    """The shared state directory (:func:`beatbus.config.state_dir`)."""
    return state_dir(env)


def job_timeout(config: GenerateConfig, duration: float) -> int:
    """rq job timeout (whole seconds) for ``duration`` seconds of requested audio."""
    return max(1, int(round(config.job_timeout_base + config.job_timeout_factor * duration)))


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in GenerateConfig.__struct_fields__:
        if key == "section_labels":
            val = env.get("BEATBUS_GENERATE_SECTION_LABELS")
            if val:
                out[key] = [s.strip() for s in val.split(",") if s.strip()]
            continue
        stage_name = f"BEATBUS_GENERATE_{key.upper()}"
        if key in _ENV_ALIASES:      # one name per concept: the model paths and the shared state dir
            val = env.get(_ENV_ALIASES[key], "")
            if not val and env.get(stage_name):
                deprecated(stage_name, _ENV_ALIASES[key])
                val = env[stage_name]
        else:
            val = env.get(stage_name, "")
        if val:
            out[key] = val
    if "state_dir" not in out and env.get("STATE_DIRECTORY"):
        out["state_dir"] = env["STATE_DIRECTORY"].split(":")[0]
    return out


def load_generate_config(flags: dict[str, Any] | None = None, *, config_file: str | os.PathLike | None = None,
                         env: dict[str, str] | None = None) -> GenerateConfig:
    """Merge defaults, the TOML ``[generate]`` table, env and flags; validate loudly.

    Raises
    ------
    ConfigError
        Naming the key and the problem.
    """
    env = dict(os.environ) if env is None else env
    merged = layered(GenerateConfig.__struct_fields__, table="generate", from_env=_from_env, flags=flags,
                     config_file=config_file, env=env)
    if "section_labels" in merged and isinstance(merged["section_labels"], str):
        merged["section_labels"] = [s.strip() for s in merged["section_labels"].split(",") if s.strip()]
    try:
        cfg = msgspec.convert(merged, GenerateConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid generate configuration: {exc}") from None
    if not cfg.state_dir:
        cfg = msgspec.structs.replace(cfg, state_dir=str(default_state_dir(env)))
    return cfg
