"""Up/down state of one LED output: each change logged once, exponential backoff while down.

A UDP output to a closed port alternates: the first datagram on a fresh socket is accepted,
the ICMP "port unreachable" it provokes fails the next one. So one successful send proves
nothing: the output is declared back (and the backoff reset) only after it has accepted
every frame for ``stable_s``.
"""
from __future__ import annotations

import threading
import time

from beatbus.bus import Backoff
from beatbus.log import get_logger

from .metrics import OUTPUT_ERRORS, OUTPUT_UP

__all__ = ["OutputHealth"]

log = get_logger("led.render")


class OutputHealth:
    """Track one device's output.

    Parameters
    ----------
    device, label : str
        Device name (log field, metric label) and the output's URL (log field).
    stable_s : float
        Seconds of successful sends before a down output counts as back.
    base_s, cap_s : float
        Backoff: the n-th consecutive failure waits up to ``min(cap_s, base_s * 2**n)`` (jittered).
    """

    def __init__(self, device: str, label: str, *, stable_s: float = 2.0, base_s: float = 0.1,
                 cap_s: float = 5.0, clock=time.monotonic):
        self.device, self.label, self.stable_s, self.clock = device, label, stable_s, clock
        self.backoff = Backoff(base=base_s, cap=cap_s)
        self.up = True
        self.failures = 0                 # since the output went down
        self._down_at = 0.0
        self._ok_since: float | None = None
        self._m_errors = OUTPUT_ERRORS.labels(device)
        self._m_up = OUTPUT_UP.labels(device)
        self._m_up.set(1)

    def sent(self) -> None:
        """A frame went out."""
        if self.up:
            return
        now = self.clock()
        if self._ok_since is None:
            self._ok_since = now
        elif now - self._ok_since >= self.stable_s:
            log.info("output back", extra={"device": self.device, "output": self.label,
                                           "down_s": round(now - self._down_at, 1), "failures": self.failures})
            self.up, self.failures, self._ok_since = True, 0, None
            self.backoff.reset()
            self._m_up.set(1)

    def failed(self, exc: BaseException, stop: threading.Event) -> None:
        """A send or (re)connect failed: count it, say so if it is news, and wait out the backoff."""
        self._m_errors.inc()
        self.failures += 1
        self._ok_since = None
        if self.up:
            self.up, self._down_at = False, self.clock()
            self._m_up.set(0)
            log.warning("output down; retrying with backoff (logged again when it is back)",
                        extra={"device": self.device, "output": self.label, "error": str(exc)})
        self.backoff.wait(stop)           # only this device's thread waits
