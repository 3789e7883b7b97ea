"""Compute thread pools of every beatbus process: one thread each by default.

OpenBLAS (numpy's BLAS), OpenMP, MKL and torch start a worker per core, and between the small
per-frame calls of a real-time stage the idle workers spin in ``sched_yield``: most of a core per
daemon for one source (a beat processor measured 98 % of a core, 16 % with one thread). So every
process caps them at ``threads`` (``BEATBUS_THREADS`` or ``threads`` in the TOML file; default 1;
0 keeps the libraries' own defaults). A pool variable the user set himself, e.g.
``OPENBLAS_NUM_THREADS=4``, is left as it is.

:func:`limit_from_env` runs when the ``beatbus`` package is imported, before anything imports
numpy (the pools are sized when the libraries load); :func:`apply` runs again once a command has
read its configuration, resizing loaded pools with threadpoolctl and torch.
"""
from __future__ import annotations

import os
import sys

__all__ = ["POOL_VARS", "limit_from_env", "apply"]

POOL_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS")
_ours: set[str] = set()           # the pool variables set here, not by the user
_applied: int | None = None       # the thread count the variables hold now


def _set_env(n: int) -> None:
    global _applied
    for var in POOL_VARS:
        if var in os.environ and var not in _ours:
            continue                              # the user's own setting wins
        if n > 0:
            os.environ[var] = str(n)
            _ours.add(var)
        elif var in _ours:
            del os.environ[var]
            _ours.discard(var)
    _applied = n


def limit_from_env() -> None:
    """Set the pool variables from ``BEATBUS_THREADS`` (default 1) before numpy or torch load."""
    raw = os.environ.get("BEATBUS_THREADS", "").strip()
    # a bad value is left to the configuration loader, which rejects it with one clear line
    _set_env(int(raw) if raw.isdigit() else 1)


def apply(n: int) -> None:
    """Make ``n`` threads (0: the libraries' defaults) the size of every pool this process controls."""
    if n == _applied:
        return
    _set_env(n)
    limit = n if n > 0 else (os.cpu_count() or 1)
    apis = [api for api, var in (("blas", "OPENBLAS_NUM_THREADS"), ("openmp", "OMP_NUM_THREADS")) if var in _ours
            or (n == 0 and var not in os.environ)]
    if apis and "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limit, user_api=apis[0] if len(apis) == 1 else None)
    if "torch" in sys.modules and ("OMP_NUM_THREADS" in _ours or n == 0):
        sys.modules["torch"].set_num_threads(limit)
