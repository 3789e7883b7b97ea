"""HTTP delivery of triggers to the error generator: the one module that speaks that protocol.

- One ``httpx.AsyncClient`` per :class:`Delivery` (connection reuse, keep-alive pool sized
  to ``concurrency``), a short timeout, a semaphore bounding POSTs in flight.
- 5xx and connection errors are retried with exponential backoff and full jitter; 4xx is
  final (the request itself is wrong). Every POST carries ``Idempotency-Key``.
- A :class:`CircuitBreaker` stops calling a service that keeps failing and lets one probe
  through after ``breaker_reset`` seconds.
- A trigger is checked for staleness before every attempt: older than ``max_age`` past its
  due time, it is dropped (a late trigger is off-beat).
- :class:`DeliveryThread` runs all this on an asyncio loop in its own thread, so the
  stream-reading service never blocks on HTTP.

Every outcome is counted in ``beatbus_triggers_total{outcome=...}``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from beatbus.bus import Backoff
from beatbus.errors import require
from beatbus.log import get_logger
from beatbus.metrics import owned_by, publish_role

from .config import TriggerConfig

try:
    import httpx
except ImportError:    # the audio install has no HTTP client: every other command still runs there
    httpx = None       # type: ignore[assignment]

__all__ = ["check_client", "Trigger", "Outcome", "Result", "BreakerState", "CircuitBreaker", "Delivery", "DeliveryThread",
           "TRIGGERS", "TRIGGER_ATTEMPTS", "CIRCUIT_STATE", "TRIGGER_LATENCY", "count_outcome"]

log = get_logger("trigger.delivery")

TRIGGERS = Counter("beatbus_triggers_total", "Triggers by final outcome", ["outcome"])
TRIGGER_ATTEMPTS = Counter("beatbus_trigger_attempts_total", "POST attempts by result class",
                           ["result"])  # 2xx | 3xx | 4xx | 5xx | error
CIRCUIT_STATE = Gauge("beatbus_trigger_circuit_state", "Error-generator circuit: 0 closed, 1 half-open, 2 open")
TRIGGER_LATENCY = Histogram("beatbus_trigger_latency_seconds", "Due time of a trigger to the receiver's response",
                            buckets=(.001, .0025, .005, .01, .02, .035, .05, .075, .1, .15, .25, .5, 1, 2.5))
TRIGGERS_IN_FLIGHT = Gauge("beatbus_triggers_in_flight", "Triggers accepted for delivery, not yet settled")
# unlabelled: only a process that delivers triggers publishes them (DeliveryThread.start)
owned_by("trigger", CIRCUIT_STATE, TRIGGER_LATENCY, TRIGGERS_IN_FLIGHT)


class Outcome(str, enum.Enum):
    """Final fate of one trigger."""

    DELIVERED = "delivered"        # 2xx
    REJECTED = "rejected"          # 3xx/4xx: the receiver answered no; never retried
    FAILED = "failed"              # 5xx / connection errors after every retry
    STALE = "stale"                # older than max_age before an attempt
    CIRCUIT_OPEN = "circuit_open"  # dropped: the breaker is open
    DUPLICATE = "duplicate"        # idempotency key already delivered (decided by the service)
    OVERFLOW = "overflow"          # more than max_pending waiting
    CANCELLED = "cancelled"        # still in flight at shutdown (left unacknowledged for redelivery)

    @property
    def reached_receiver(self) -> bool:
        """True when the receiver saw and answered the request (so it must not be re-sent)."""
        return self in (Outcome.DELIVERED, Outcome.REJECTED)


def count_outcome(outcome: Outcome) -> None:
    TRIGGERS.labels(outcome.value).inc()


@dataclass(frozen=True, slots=True)
class Trigger:
    """One POST to make.

    Attributes
    ----------
    key : str
        Idempotency key, e.g. ``source:beat-entry-id:n``; sent as ``Idempotency-Key``.
    body : bytes
        JSON payload (a :class:`schemas.TriggerRequest`).
    due : float
        Wall-clock Unix time (s) the trigger should go out; staleness counts from it.
    """

    key: str
    body: bytes
    due: float


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    status: int | None = None        # last HTTP status seen
    attempts: int = 0
    error: str = ""                  # last transport error class, if any


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a single half-open probe.

    Closed: calls pass; ``failures`` consecutive failures open it. Open: calls are refused
    for ``reset_s``; then half-open: one probe passes, its success closes the circuit and
    its failure opens it again. Used from one event loop (not thread-safe by design).
    """

    def __init__(self, failures: int, reset_s: float, *, clock=time.monotonic):
        self.threshold, self.reset_s, self.clock = failures, reset_s, clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probe = False
        CIRCUIT_STATE.set(0)

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            log.info("circuit breaker state change", extra={"from": self.state.value, "to": state.value})
        self.state = state
        CIRCUIT_STATE.set(_GAUGE[state])

    def allow(self) -> bool:
        """May a request go out now? (In half-open, only the one probe may.)"""
        if self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.reset_s:
            self._set(BreakerState.HALF_OPEN)
            self._probe = False
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self._probe:
            self._probe = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self._probe = False
        self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        self._probe = False
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self._set(BreakerState.OPEN)

    def abandon(self) -> None:
        """An allowed call was cancelled before it finished: free the probe slot."""
        self._probe = False


def check_client() -> None:
    """Raise DependencyError, naming the extra, where the HTTP client is not installed."""
    if httpx is None:
        require("httpx", "the error-generator trigger client")


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 200 <= status < 600 else "error"


class Delivery:
    """POST triggers with retries, a breaker and staleness checks (use inside one event loop).

    Parameters
    ----------
    config : TriggerConfig
        ``url`` must be set.
    """

    def __init__(self, config: TriggerConfig):
        check_client()
        self.config = config
        self.endpoint = config.endpoint
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset)
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> Delivery:
        limits = httpx.Limits(max_connections=self.config.concurrency,
                              max_keepalive_connections=self.config.concurrency, keepalive_expiry=30.0)
        # trust_env=False: proxies from the environment must not reroute triggers.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.config.timeout), limits=limits,
                                         trust_env=False, follow_redirects=False,
                                         headers={"Content-Type": "application/json"})
        self._sem = asyncio.Semaphore(self.config.concurrency)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def deliver(self, trigger: Trigger) -> Result:
        """Send one trigger; returns its final :class:`Result` (never raises for HTTP trouble)."""
        wait = trigger.due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        async with self._sem:
            return await self._attempts(trigger)

    async def _attempts(self, trigger: Trigger) -> Result:
        status, error = None, ""
        backoff = Backoff(base=self.config.backoff_base, cap=self.config.backoff_cap)
        for attempt in range(self.config.retries + 1):
            if time.time() - trigger.due > self.config.max_age:
                return Result(Outcome.STALE, status, attempt, error)
            if not self.breaker.allow():
                return Result(Outcome.CIRCUIT_OPEN, status, attempt, error)
            try:
                resp = await self._client.post(self.endpoint, content=trigger.body,
                                               headers={"Idempotency-Key": trigger.key})
            except httpx.HTTPError as exc:
                self.breaker.failure()
                TRIGGER_ATTEMPTS.labels("error").inc()
                status, error = None, type(exc).__name__
            except BaseException:
                self.breaker.abandon()
                raise
            else:
                status = resp.status_code
                TRIGGER_ATTEMPTS.labels(_status_class(status)).inc()
                if status < 500:
                    self.breaker.success()  # the service is up, even when it says no
                    TRIGGER_LATENCY.observe(max(0.0, time.time() - trigger.due))
                    outcome = Outcome.DELIVERED if 200 <= status < 300 else Outcome.REJECTED
                    return Result(outcome, status, attempt + 1)
                self.breaker.failure()
            if attempt < self.config.retries:
                await asyncio.sleep(backoff.delay())     # awaited: the loop serves other triggers
        return Result(Outcome.FAILED, status, self.config.retries + 1, error)


class DeliveryThread:
    """A :class:`Delivery` on its own event loop thread; :meth:`submit` is thread-safe.

    Parameters
    ----------
    config : TriggerConfig
    name : str
        Thread name (for logs and debuggers).
    """

    def __init__(self, config: TriggerConfig, *, name: str = "trigger-delivery"):
        self.config = config
        self.delivery = Delivery(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False

    @property
    def breaker(self) -> CircuitBreaker:
        return self.delivery.breaker

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> DeliveryThread:
        publish_role("trigger")
        self._thread.start()
        self._started.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.delivery.__aenter__())
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.delivery.__aexit__(None, None, None))
            self._loop.close()

    def submit(self, trigger: Trigger) -> concurrent.futures.Future:
        """Queue a trigger; the future resolves to its :class:`Result` (already counted)."""
        with self._lock:
            if self._closed or self._pending >= self.config.max_pending:
                fut: concurrent.futures.Future = concurrent.futures.Future()
                fut.set_result(Result(Outcome.OVERFLOW))
                count_outcome(Outcome.OVERFLOW)
                return fut
            self._pending += 1
        TRIGGERS_IN_FLIGHT.inc()
        fut = asyncio.run_coroutine_threadsafe(self.delivery.deliver(trigger), self._loop)
        fut.add_done_callback(self._settled)
        return fut

    def _settled(self, fut: concurrent.futures.Future) -> None:
        with self._lock:
            self._pending -= 1
        TRIGGERS_IN_FLIGHT.dec()
        if fut.cancelled():
            count_outcome(Outcome.CANCELLED)
        elif fut.exception() is not None:
            log.error("trigger delivery crashed", exc_info=fut.exception())
            count_outcome(Outcome.FAILED)
        else:
            count_outcome(fut.result().outcome)

    def close(self, timeout: float = 2.0) -> None:
        """Let in-flight triggers finish for up to ``timeout`` s, then stop the loop."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._thread.is_alive():
            def _cancel_all() -> None:
                for task in asyncio.all_tasks(self._loop):
                    task.cancel()
                self._loop.call_soon(self._loop.stop)

            self._loop.call_soon_threadsafe(_cancel_all)
            self._thread.join(timeout=5)
