"""Token buckets per (key, route): the API's rate limits.

Each scope has a rate (tokens per second) and a burst (bucket size); every request takes one
token from the bucket of its caller and route. Reads are generous, generation and triggers
strict. Configure with ``--rate SCOPE=PER_SECOND/BURST`` or ``BEATBUS_API_RATES``
(e.g. ``trigger=2/4,generate=0.05/2``).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from beatbus.errors import ConfigError

__all__ = ["Rate", "DEFAULT_RATES", "TokenBuckets", "parse_rates"]


@dataclass(frozen=True)
class Rate:
    """``per_second`` tokens refill a bucket of ``burst`` tokens."""

    per_second: float
    burst: float


DEFAULT_RATES: dict[str, Rate] = {
    "read": Rate(20.0, 60.0),
    "control": Rate(5.0, 10.0),
    "trigger": Rate(2.0, 5.0),        # each one fires at another service
    "generate": Rate(0.1, 3.0),       # each one queues a model run: 6 a minute after a burst of 3
}


def parse_rates(specs, base: dict[str, Rate] | None = None) -> dict[str, Rate]:
    """``["trigger=2/4", ...]`` or ``"trigger=2/4,generate=0.1/3"`` -> rates (over ``base``)."""
    from .auth import SCOPES

    out = dict(DEFAULT_RATES if base is None else base)
    if isinstance(specs, str):
        specs = [s for s in specs.replace(" ", ",").split(",") if s]
    for spec in specs or ():
        scope, _, value = spec.partition("=")
        per_s, _, burst = value.partition("/")
        try:
            rate = Rate(float(per_s), float(burst or per_s))
        except ValueError:
            rate = None
        if scope not in SCOPES or rate is None or not (rate.per_second > 0 and rate.burst >= 1):
            raise ConfigError(f"rate {spec!r}: expected SCOPE=PER_SECOND/BURST with SCOPE one of "
                              f"{', '.join(SCOPES)}, PER_SECOND > 0 and BURST >= 1")
        out[scope] = rate
    return out


class TokenBuckets:
    """Buckets keyed by (caller, route), least recently used dropped beyond ``max_buckets``."""

    def __init__(self, rates: dict[str, Rate] | None = None, *, max_buckets: int = 10_000, clock=time.monotonic):
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, caller: str, route: str, scope: str) -> float:
        """Take a token: 0.0 if allowed, else the seconds until one is available."""
        rate = self.rates.get(scope)
        if rate is None:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.pop((caller, route), None) or [rate.burst, now]
            tokens = min(rate.burst, bucket[0] + (now - bucket[1]) * rate.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            self._buckets[(caller, route)] = [tokens, now]
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` is whole seconds: round up so a client that obeys it succeeds."""
        return str(max(1, math.ceil(wait)))
