"""Generation: the stream (or the API) asks for music; rq workers make it.

::

    bb:{src}:beats/sections/intensity ─> GenerationService (policy) ─┐
    POST /api/upload, /api/generate (api.build_router) ───────────────┼─> rq queue ─> `beatbus worker`
    beatbus generate musicgen|lstm|submit ────────────────────────────┘     MusicGen | MusicGen-Melody |
                                                                            LSTM composer | CLAP embeddings
                                                                            -> <state_dir>/generate/results

Modules: :mod:`.config` (GenerateConfig), :mod:`.spec` (parameters, GenerationJob),
:mod:`.conditioning` (stream snapshot, audio capture, key, prompt), :mod:`.policy` and
:mod:`.service` (the consumer daemon), :mod:`.jobqueue` (enqueue, status, sweep),
:mod:`.jobs` (rq job functions), :mod:`.worker` (``beatbus worker``), :mod:`.backends`
(musicgen, lstm, audiocraft), :mod:`.clap`, :mod:`.audio` (decode, BS.1770 loudness),
:mod:`.storage`, :mod:`.api`, :mod:`.cli`.

Names are imported lazily: ``beatbus --help`` loads this package and must stay fast.
"""
from __future__ import annotations

import importlib

__all__ = ["GenerateConfig", "load_generate_config", "GenerationService", "GenerationQueue", "GenerationWorker",
           "run_worker", "build_router", "GenerateParams", "GenerationJob", "build_job", "Store", "MusicGen",
           "Composer", "ClapEmbedder", "EmbeddingIndex"]

_WHERE = {"GenerateConfig": ".config", "load_generate_config": ".config", "GenerationService": ".service",
          "GenerationQueue": ".jobqueue", "GenerationWorker": ".worker", "run_worker": ".worker",
          "build_router": ".api", "GenerateParams": ".spec", "GenerationJob": ".spec", "build_job": ".spec",
          "Store": ".storage", "MusicGen": ".backends.musicgen", "Composer": ".backends.lstm",
          "ClapEmbedder": ".clap", "EmbeddingIndex": ".clap"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
