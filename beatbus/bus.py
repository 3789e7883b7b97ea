"""The one bus client: Redis Streams publish/read, consumer groups, dead letters, leases.

Patterns (ARCHITECTURE.md):

- fan-out readers that want the latest state use :class:`Reader` (plain XREAD, from ``$``);
  consumers read decoded events through :class:`EventReader` (a Reader, the decoding and the
  broker-error policy: :data:`BROKER_ERRORS` retried after a jittered :class:`Backoff`);
- independent work uses :class:`Group` (XREADGROUP + XACK, an XAUTOCLAIM janitor, and a
  dead-letter stream after ``max_deliveries``);
- stateful per-source work is owned through a :class:`Lease` (a TTL key renewed while alive),
  one per source, managed by :class:`~beatbus.leases.SourceLeases`.

redis-py 8 uses a 5 s socket timeout; every BLOCK here is capped at 1 s and callers loop.

A ``redis+cluster://`` (or ``rediss+cluster://``) URL selects a Redis Cluster (redis-py's
``RedisCluster``): every source's keys share one hash slot (``{source}``), so no command here spans
two sources; a :class:`Reader` of several sources reads each slot on its own thread.
"""
from __future__ import annotations

import queue
import random
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterError, RedisClusterException, TryAgainError
from redis.retry import Retry

from beatbus.schemas import Event, StreamEnd, codec

from . import keys
from .config import redact_url
from .errors import BrokerError, ConfigError, SchemaError
from .log import get_logger
from .metrics import BROKER_RECONNECTS, DEAD_LETTERS, EVENTS_CONSUMED, EVENTS_PUBLISHED, MALFORMED, child

__all__ = ["Bus", "Reader", "EventReader", "FanIn", "Group", "Lease", "Backoff", "Entry", "BROKER_ERRORS",
           "Outage", "note_reconnect", "note_back", "guarded", "on_node"]

log = get_logger("bus")
Entry = tuple[str, str, dict]          # (stream, entry id, fields)
# Worth retrying: the broker is away, loading, or (cluster) failing over, resharding, not covering a
# slot yet, or no node reachable (RedisClusterException, which is not a RedisError). redis-py's
# cluster client already follows MOVED/ASK and refreshes its slot map; these are what is left once
# its own retries are spent. (Its client-side CROSSSLOT is a RedisClusterException too: no command
# here names keys of two sources, and test_cluster_bus.py holds that.)
BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, ClusterError,
                 TryAgainError, RedisClusterException)
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
UNSERVED = "no master"          # the node of a slot no master serves (a lost shard, once the map says so)
MAX_BLOCK_MS = 1000
DEAD_LETTER_MAXLEN = 10000
DEAD_MARK_TTL_S = 3600      # long past any reader's lag: a later reader of the entry finds the mark
REJECT_LOG_EVERY_S = 60.0   # a stream's rejected entries: one log line a minute, every one counted
ENDS_KEPT, ENDS_TTL_S = 100, 24 * 3600   # genuine end ids remembered per stream (as long as a checkpoint)

# XADD a StreamEnd and record its id, in one step; with a lease key (KEYS[3]), only while ARGV[2] holds it.
_END_STREAM = f"""
if KEYS[3] and redis.call('get', KEYS[3]) ~= ARGV[2] then
  return false
end
local id = redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3))
redis.call('zadd', KEYS[2], tonumber(string.match(id, '^%d+')), id)
redis.call('zremrangebyrank', KEYS[2], 0, -{ENDS_KEPT + 1})
redis.call('expire', KEYS[2], {ENDS_TTL_S})
return id
"""


def _s(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _kind(stream: str) -> str:
    """Stream kind label for metrics (``bb:{src}:beats`` -> ``beats``; ``other`` for any other stream)."""
    try:
        return keys.parse(stream)[1]
    except ConfigError:
        return "other"


class Backoff:
    """Exponential backoff with full jitter: the one retry law of every daemon (with
    :data:`BROKER_ERRORS`, the broker errors worth retrying)."""

    def __init__(self, base: float = 0.05, cap: float = 2.0):
        self.base, self.cap, self.attempt = base, cap, 0

    def delay(self) -> float:
        """The next delay (s), uniform in ``[0, min(cap, base * 2**attempt)]``; counts the attempt.

        For a caller that must not sleep (it schedules the retry) or awaits instead."""
        delay = random.uniform(0, min(self.cap, self.base * 2 ** self.attempt))
        self.attempt += 1
        return delay

    def wait(self, stop: threading.Event | None = None) -> None:
        delay = self.delay()
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)

    def reset(self) -> None:
        self.attempt = 0


class _ClusterClient(RedisCluster):
    """redis-py's cluster client, finding the stream keys of XREAD and XREADGROUP itself.

    For a command whose keys move (these two), redis-py asks the cluster's default node for them
    (COMMAND GETKEYS): a second round trip per read, and while that node is down (a master killed,
    until its replica takes over) every read fails, whichever master holds the stream. Their keys
    are the first half of what follows STREAMS.
    """

    def determine_slot(self, *args) -> int | None:
        command = _s(args[0]).upper()
        if command not in ("XREAD", "XREADGROUP"):
            return super().determine_slot(*args)
        first = 4 if command == "XREADGROUP" else 1     # past GROUP name consumer
        at = next((i for i in range(first, len(args))
                   if isinstance(args[i], (str, bytes)) and _s(args[i]).upper() == "STREAMS"), None)
        if at is None:
            return super().determine_slot(*args)
        streams = args[at + 1:]
        slots = {self.keyslot(k) for k in streams[:len(streams) // 2]}
        if len(slots) != 1:
            raise RedisClusterException(f"{command} - all keys must map to the same key slot")
        return slots.pop()


class Bus:
    """A Redis connection plus beatbus's stream operations.

    Parameters
    ----------
    url : str
        ``redis://``, ``rediss://`` or ``unix://`` URL (credentials allowed); ``redis+cluster://``
        or ``rediss+cluster://`` for a Redis Cluster (any node as the seed).
    """

    redis: Any     # redis.Redis, or redis.cluster.RedisCluster when :attr:`cluster`

    def __init__(self, url: str, *, name: str = "beatbus"):
        self.url = url
        self.name = name
        self._reject_lines: dict[tuple[str, str], list] = {}   # (stream, reason) -> [last line at, since then]
        scheme, sep, rest = url.partition("://")
        self.cluster = scheme in CLUSTER_SCHEMES
        common = dict(socket_timeout=5, socket_connect_timeout=3, health_check_interval=15, client_name=name)
        try:
            if self.cluster:
                # redis-py retries a failed command at once, after refreshing its slot map (CLUSTER
                # SLOTS, and every node's connections marked for reconnect). One retry follows a
                # failover that is already over. During one (the node timeout, then the election),
                # more retries only repeat that refresh, and they slowed the reads of the live
                # masters: with 6, a trigger's beats from a live master were up to 1.1 s late,
                # with 1 up to 0.36 s (test_trigger_cluster.py's scenario, 10 runs under load).
                # The daemon's own backoff paces the rest.
                self.redis = _ClusterClient.from_url(
                    f"{CLUSTER_SCHEMES[scheme]}{sep}{rest}", require_full_coverage=False,
                    retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 1), **common)
            else:
                self.redis = redis.Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), 2),
                                                  **common)
        except ValueError as exc:
            raise BrokerError(f"REDIS_URL {redact_url(url)} is invalid: {exc}") from None
        except (redis.RedisError, RedisClusterException) as exc:    # the cluster client connects at once
            raise BrokerError(f"cannot reach Redis Cluster at {redact_url(url)}: {exc}") from None
        self._end_stream = self.redis.register_script(_END_STREAM)

    @classmethod
    def connect(cls, url: str, *, name: str = "beatbus") -> Bus:
        """Connect and PING, or raise BrokerError naming the (redacted) URL and cause."""
        bus = cls(url, name=name)
        bus.ping()
        return bus

    def ping(self) -> None:
        try:
            self.redis.ping()
            if not self.cluster:
                self._refuse_cluster_node()
        except redis.AuthenticationError as exc:
            raise BrokerError(f"broker at {redact_url(self.url)} refused the credentials: {exc}") from None
        except redis.RedisError as exc:
            raise BrokerError(f"cannot reach broker at {redact_url(self.url)}: {exc}") from None

    def _refuse_cluster_node(self) -> None:
        """A single-node client on a cluster node works only for the sources whose slot that node
        holds, and dies with MOVED on the others: say so before anything starts."""
        try:
            enabled = self.redis.info("cluster").get("cluster_enabled")
        except redis.ResponseError:     # INFO not allowed to this user (ACL), or not supported
            return
        if str(enabled) == "1":
            scheme, _, rest = self.url.partition("://")
            cluster = f"{'rediss' if scheme == 'rediss' else 'redis'}+cluster://{rest}"
            raise BrokerError(f"broker at {redact_url(self.url)} is a Redis Cluster node: "
                              f"use {redact_url(cluster)} so every source's node is found")

    def close(self) -> None:
        self.redis.close()

    def by_node(self, items: list, key) -> dict[str, list]:
        """``items`` grouped by the node that holds ``key(item)``, by node name: one group named ""
        on a single node, one per master on a cluster, where a pipeline per group fails alone while
        its master is down (a caller names the node in its log, so one node's outage is said once)."""
        if not self.cluster:
            return {"": items} if items else {}
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(self.node_name(key(item)), []).append(item)
        return groups

    def node_name(self, key: str) -> str:
        """``HOST:PORT`` of the master that holds ``key`` on a cluster ("" on a single server)."""
        if not self.cluster:
            return ""
        try:
            return self.redis.get_node_from_key(key).name
        except RedisClusterException:       # slots no master serves (yet) are one group
            return UNSERVED

    def clock_ms(self) -> int:
        """The broker's clock (ms), the one stream ids use. On a cluster, the node of the source
        registry's: redis-py would ask a random node, and one that is down would fail the call."""
        node = {"target_nodes": self.redis.get_node_from_key(keys.SOURCES)} if self.cluster else {}
        sec, usec = self.redis.time(**node)
        return sec * 1000 + usec // 1000

    def per_node(self, items: list, key, what: str, work) -> list:
        """``work(share)`` for each node's share of ``items`` (:meth:`by_node`); returns the items of
        the shares whose broker calls failed. A failed share is said once per outage of its node
        (``WHAT on HOST:PORT``) and does not stop the others: on a cluster, a master that is down (or
        lost with its replica) holds back only the sources it holds."""
        failed: list = []
        for node, part in self.by_node(items, key).items():
            name = on_node(what, node)
            try:
                work(part)
            except BROKER_ERRORS as exc:
                note_reconnect(exc, name)
                failed += part
            else:
                note_back(name)
        return failed

    def pipeline(self):
        """A non-transactional pipeline: pass it as ``pipeline=`` to batch several calls in one round trip."""
        return self.redis.pipeline(transaction=False)

    # -- publishing -----------------------------------------------------------------
    def publish(self, stream: str, event: Any, *, maxlen: int, pipeline=None) -> str | None:
        """XADD an event with ``MAXLEN ~ maxlen``; returns the id (None inside a pipeline).

        A StreamEnd goes through :meth:`end_stream`, so readers accept it."""
        if isinstance(event, StreamEnd):
            return self.end_stream(stream, event, maxlen=maxlen, pipeline=pipeline)
        return self.publish_fields(stream, codec.to_fields(event), maxlen=maxlen, pipeline=pipeline)

    def end_stream(self, stream: str, end: StreamEnd, *, maxlen: int, lease: Lease | None = None,
                   pipeline=None) -> str | None:
        """XADD ``end`` and record its id in :func:`keys.stream_ends <beatbus.keys.stream_ends>`, atomically.

        Readers (:meth:`decode`) take a StreamEnd only if it is recorded there, so an end someone adds
        by hand ends nothing. With ``lease`` (the producer's claim on the source) it is written only
        while that lease is still ours: returns None, and writes nothing, when it is not.
        """
        fields = [x for kv in codec.to_fields(end).items() for x in kv]
        lease_keys, owner = ([lease.key], lease.owner) if lease is not None else ([], "")
        entry_id = self.run_script(self._end_stream, [stream, keys.stream_ends(stream), *lease_keys],
                                   [maxlen, owner, *fields], pipeline)
        if pipeline is None and not entry_id:
            return None
        EVENTS_PUBLISHED.labels(_kind(stream)).inc()
        return None if pipeline is not None else _s(entry_id)

    def publish_fields(self, stream: str, fields: dict, *, maxlen: int, pipeline=None) -> str | None:
        target = pipeline if pipeline is not None else self.redis
        entry_id = target.xadd(stream, fields, maxlen=maxlen, approximate=True)
        child(EVENTS_PUBLISHED, _kind(stream)).inc()
        return None if pipeline is not None else _s(entry_id)

    # -- dead letters -----------------------------------------------------------------
    def dead_letter(self, stream: str, entry_id: str, fields: dict, reason: str, *,
                    detail: str = "", deliveries: int = 0) -> None:
        """Move an entry to ``<stream>:dead`` with why, and count it."""
        # keep the entry's own fields (byte names: a writer may have used non-UTF-8 names) minus ours
        ours = {b"origin", b"origin_id", b"reason", b"detail", b"deliveries", b"at"}
        doc = {k: v for k, v in fields.items() if (k if isinstance(k, bytes) else str(k).encode()) not in ours}
        doc.update({"origin": stream, "origin_id": entry_id, "reason": reason,
                    "detail": detail[:500], "deliveries": deliveries, "at": time.time()})
        self.redis.xadd(keys.dead_letter(stream), doc, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        DEAD_LETTERS.labels(_kind(stream), reason).inc()

    def decode(self, stream: str, entry_id: str, fields: dict, kind: Any, *, shared: bool = False) -> Any | None:
        """Decode an entry; a malformed one is counted, logged once and dead-lettered (-> None).

        So is a StreamEnd its stream's writer did not record (:meth:`end_stream`): one added by hand.
        ``shared``: the stream also carries other stages' messages (``control``): an entry tagged
        with a type that is not ``kind``'s is theirs, skipped (-> None) and neither counted nor
        dead-lettered."""
        if shared and codec.tag_of(fields) not in (None, *codec.tags(kind)):
            return None
        try:
            event = codec.from_fields(fields, kind)
        except SchemaError as exc:
            MALFORMED.labels(_kind(stream)).inc()
            self._reject(stream, entry_id, fields, "malformed", str(exc))
            return None
        if isinstance(event, StreamEnd) and not self._recorded_end(stream, entry_id):
            self._reject(stream, entry_id, fields, "unverified_end",
                         f"not written by the stream's writer (no record in {keys.stream_ends(stream)})")
            return None
        child(EVENTS_CONSUMED, _kind(stream)).inc()
        return event

    def _recorded_end(self, stream: str, entry_id: str) -> bool:
        try:
            return self.redis.zscore(keys.stream_ends(stream), entry_id) is not None
        except BROKER_ERRORS:
            return True     # cannot check now: a genuine end must still end the stream

    def _reject(self, stream: str, entry_id: str, fields: dict, reason: str, detail: str) -> None:
        """Log and dead-letter a rejected entry once: every fan-out reader sees it, the first one to
        mark it moves it."""
        try:
            if self.redis.set(keys.dead_letter_mark(stream, entry_id), 1, nx=True, ex=DEAD_MARK_TTL_S):
                self._log_reject(stream, entry_id, reason, detail)
                self.dead_letter(stream, entry_id, fields, reason, detail=detail)
        except BROKER_ERRORS:
            pass  # the entry is still in its stream; the caller's count records the loss of context

    def _log_reject(self, stream: str, entry_id: str, reason: str, detail: str) -> None:
        """One line per stream and reason a minute: a bad writer must not flood the journal (every
        entry is still counted and dead-lettered; the next line says how many came in between)."""
        now = time.monotonic()
        seen = self._reject_lines.get((stream, reason))
        if seen is not None and now - seen[0] < REJECT_LOG_EVERY_S:
            seen[1] += 1
            return
        what = "malformed entry" if reason == "malformed" else "unverified stream end"
        extra = {"stream": stream, "id": entry_id, "error": detail}
        if seen is not None and seen[1]:
            extra["more_since_last_line"] = seen[1]
        log.warning(f"{what} dead-lettered (more on this stream: one line a minute, all in {keys.dead_letter(stream)})",
                    extra=extra)
        self._reject_lines[(stream, reason)] = [now, 0]

    # -- registry and checkpoints -----------------------------------------------------
    def heartbeat(self, source: str, *, pipeline=None) -> None:
        (pipeline or self.redis).zadd(keys.SOURCES, {source: time.time()})

    def sources(self, max_age: float) -> list[str]:
        """Sources whose producer sent a heartbeat within ``max_age`` seconds."""
        now = time.time()
        members: Any = self.redis.zrangebyscore(keys.SOURCES, now - max_age, "+inf")    # names only: no scores asked
        return sorted(_s(s) for s in members)

    def join(self, role: str, owner: str) -> None:
        """Heartbeat instance ``owner`` of ``role`` in the instance registry (see :meth:`instances`)."""
        self.redis.zadd(keys.instances(role), {owner: time.time()})

    def leave(self, role: str, owner: str) -> None:
        self.redis.zrem(keys.instances(role), owner)

    def instances(self, role: str, max_age: float) -> list[str]:
        """Instances of ``role`` that sent a heartbeat within ``max_age`` seconds (older ones are pruned)."""
        key, now = keys.instances(role), time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", f"({now - max_age}")
        pipe.zrangebyscore(key, now - max_age, "+inf")
        return sorted(_s(m) for m in pipe.execute()[1])

    def get_checkpoint(self, source: str, role: str) -> str | None:
        val = self.redis.get(keys.checkpoint(source, role))
        return _s(val) if val else None

    def set_checkpoint(self, source: str, role: str, entry_id: str, *, pipeline=None) -> None:
        (pipeline or self.redis).set(keys.checkpoint(source, role), entry_id, ex=24 * 3600)

    def last_id(self, stream: str) -> str:
        """Id of the newest entry, or ``0-0`` for an empty or missing stream."""
        newest = self.newest(stream, 1)
        return newest[0][0] if newest else "0-0"

    def newest(self, stream: str, count: int, *, upper: str = "+") -> list[tuple[str, dict]]:
        """The newest ``count`` entries up to ``upper`` (an id, ``(id`` for below it), newest first."""
        entries: Any = self.redis.xrevrange(stream, max=upper, count=count)    # [(id, fields), ...]
        return [(_s(i), f) for i, f in entries]

    def get_many(self, names: list[str]) -> list[str | None]:
        """The value of each key (None where unset; e.g. the holders of leases), in one pipelined
        round trip: per node on a cluster, where one MGET across sources would be CROSSSLOT."""
        if not names:
            return []
        pipe = self.pipeline()
        for key in names:
            pipe.get(key)
        return [None if v is None else _s(v) for v in pipe.execute()]

    def run_script(self, script, keys: list[str], args: list, pipeline=None):
        """Run a registered Lua script, directly or inside ``pipeline``. On a cluster it sends the body
        (EVAL): a cluster pipeline cannot load a missing script (NOSCRIPT), and redis-py loads one on
        every master, which fails while any master is down (a lease on a live master could not be
        renewed while another master was lost)."""
        if self.cluster:
            return (self.redis if pipeline is None else pipeline).execute_command(
                "EVAL", script.script, len(keys), *keys, *args)
        return script(keys=keys, args=args, client=pipeline)


class Reader:
    """Fan-out XREAD over several streams, remembering the last id of each.

    ``start="$"`` is resolved to each stream's current last id at construction, so no
    entry published after that is missed between two reads (plain ``$`` would skip them).

    On a cluster one XREAD may only name streams of one hash slot (one source). A reader of several
    sources reads each slot with a blocking XREAD on a thread of its own (a :class:`FanIn`),
    woken as soon as any source has an entry: measured in the cluster issue, a thread per source
    gave p50 0.31 ms / p99 1.9 ms at 30 sources where polling every slot gave 2.45 / 8.8 ms, and a
    blocked thread costs no CPU.
    """

    def __init__(self, bus: Bus, streams: Iterable[str], *, start: str = "$", block_ms: int = 500):
        self.bus = bus
        self.block_ms = min(block_ms, MAX_BLOCK_MS)
        self.ids: dict[str, str] = {}
        self._fan: _SlotReader | None = None
        self._failing: set[int] = set()                 # slots whose last poll failed
        self._error: BaseException | None = None        # a poll's error, raised after its entries
        for s in streams:
            self.add(s, start)

    def add(self, stream: str, start: str = "$") -> None:
        self.ids[stream] = self.bus.last_id(stream) if start == "$" else start
        if self._fan is not None:
            self._fan.add(stream, self.ids[stream])

    def remove(self, stream: str) -> None:
        self.ids.pop(stream, None)
        if self._fan is not None:
            self._fan.remove(stream)

    def close(self) -> None:
        """Stop the slot threads (cluster); a plain Reader holds nothing."""
        if self._fan is not None:
            self._fan.close()
        for slot in self._failing:
            _waiters.gone((id(self), slot))

    def __del__(self) -> None:
        self.close()

    def read(self, count: int = 100, block_ms: int | None = None) -> list[Entry]:
        block = self.block_ms if block_ms is None else min(block_ms, MAX_BLOCK_MS)
        if not self.ids:
            time.sleep(block / 1000)
            return []
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._fan is None and self.bus.cluster and len(_by_slot(self.ids)) > 1:
            if block == 0:
                return self._poll(count)
            self._fan = _SlotReader(self.bus, self.ids)
        if self._fan is not None:
            return self._take(self._fan.read(count, block))
        return self._take(_xread(self.bus, self.ids, count, block))

    def _poll(self, count: int) -> list[Entry]:
        """One non-blocking XREAD per slot (a cluster). A slot whose node fails is skipped and said
        once per outage, as a :class:`FanIn` thread says its own, so the others' entries still come
        back; any other error is raised after them, by the next read."""
        out: list[Entry] = []
        for slot, group in _by_slot(self.ids).items():
            try:
                out += self._take(_xread(self.bus, group, count, 0))
            except BROKER_ERRORS as exc:
                _waiters.failed(exc, on_node("read sources", self.bus.node_name(next(iter(group)))),
                                (id(self), slot))
                self._failing.add(slot)
            except Exception as exc:  # noqa: BLE001  (raised after the other slots' entries)
                self._error = self._error or exc
            else:
                if slot in self._failing:
                    self._failing.discard(slot)
                    _waiters.ok((id(self), slot))
        if self._error is not None and not out:
            error, self._error = self._error, None
            raise error
        return out

    def _take(self, entries: list[Entry]) -> list[Entry]:
        """Advance past ``entries``, dropping any at or before a stream's position (a stream removed,
        or re-added further on, while its slot thread had entries queued)."""
        out = []
        for entry in entries:
            stream, entry_id, _ = entry
            if stream in self.ids and _id_key(entry_id) > _id_key(self.ids[stream]):
                self.ids[stream] = entry_id
                out.append(entry)
        return out


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@lru_cache(maxsize=65536)     # per read, per stream: a deployment has a bounded set of streams
def _slot(stream: str) -> int:
    return key_slot(stream.encode())


def _by_slot(ids: dict[str, str]) -> dict[int, dict[str, str]]:
    groups: dict[int, dict[str, str]] = {}
    for stream, entry_id in ids.items():
        groups.setdefault(_slot(stream), {})[stream] = entry_id
    return groups


def _xread(bus: Bus, ids: dict[str, str], count: int, block: int) -> list[Entry]:
    """XREAD ``ids`` (streams of one slot on a cluster)."""
    # redis-py's reply shape: [(stream, [(id, fields), ...]), ...] (a Redis, or a RedisCluster)
    reply: Any = bus.redis.xread(ids, count=count, block=block or None)
    return [(_s(stream), _s(entry_id), fields) for stream, entries in reply or [] for entry_id, fields in entries]


class FanIn:
    """Blocking reads on threads of their own, one per key, all feeding one queue that :meth:`read`
    drains: how a reader of several sources waits on all of them on a cluster, where one XREAD or
    XREADGROUP may only name keys of one hash slot.

    ``fetch(key, count, block_ms)`` does one blocking read for ``key`` and returns its entries, or
    None when the key has nothing left to read (its thread ends; :meth:`start` starts it again).
    Each thread stays at most :attr:`QUEUED` batches ahead of the consumer (a slow consumer stalls
    the threads, not memory). A broker error is the thread's own: it says so once per outage of
    its key (``what(key)`` names it in the log, e.g. the source), backs off, retries, and says when
    the key is back. The reader's other keys go on meanwhile, so its caller hears nothing: one
    master down (its sources) is not the broker down. Any other error is handed over to
    :meth:`read`, which raises it after the entries read before it, so the caller's policy sees it.
    A fan-in dropped by its owner ends its threads (they hold it weakly), as does :meth:`close`.
    """

    QUEUED = 8

    def __init__(self, fetch, *, name: str = "fan-in", what=None):
        self.fetch, self.name = fetch, name
        self.what = what or (lambda key: f"{name} {key}")
        self.lock = threading.Lock()
        self.threads: dict[Any, threading.Thread] = {}
        self.queue: queue.Queue[tuple[threading.Semaphore, list[Entry] | BaseException]] = queue.Queue()
        self.stop = threading.Event()
        self.count, self.block = 100, 500
        self._error: BaseException | None = None

    def start(self, key) -> None:
        """Read ``key`` on a thread of its own, unless one already does."""
        with self.lock:
            if key not in self.threads:
                self.threads[key] = threading.Thread(target=_fan_in_loop, args=(weakref.proxy(self), key),
                                                     name=f"{self.name}-{key}", daemon=True)
                self.threads[key].start()

    def read(self, count: int, block: int) -> list[Entry]:
        """Entries the threads read (up to about ``count``), waiting up to ``block`` ms for the first."""
        self.count, self.block = count, max(block, 1)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        out: list[Entry] = []
        try:
            room, item = self.queue.get(timeout=block / 1000)
            while True:
                room.release()
                if isinstance(item, BaseException):
                    if not out:
                        raise item
                    self._error = item      # the entries read before it are handled first
                    break
                out.extend(item)
                if len(out) >= count:
                    break
                room, item = self.queue.get_nowait()
        except queue.Empty:
            pass
        return out

    def close(self) -> None:
        self.stop.set()

    def __del__(self) -> None:
        self.stop.set()


def _fan_in_loop(fan: FanIn, key) -> None:
    """The loop of one :class:`FanIn` thread (``fan`` is a weak proxy: a dropped fan-in ends it)."""
    backoff, failing, room = Backoff(), False, threading.Semaphore(FanIn.QUEUED)
    me = threading.current_thread()
    try:
        while not fan.stop.is_set():
            try:
                got = fan.fetch(key, fan.count, fan.block)
                if got is None:
                    with fan.lock:
                        del fan.threads[key]
                    return
                if failing:
                    _waiters.ok(me)
                failing = False
                backoff.reset()
            except BROKER_ERRORS as exc:
                if fan.stop.is_set():
                    return
                _waiters.failed(exc, fan.what(key), me)
                failing, got = True, []
                backoff.wait(fan.stop)
            except Exception as exc:  # noqa: BLE001  (handed over: the reader's policy decides)
                if fan.stop.is_set():
                    return
                got = exc
                backoff.wait(fan.stop)
            if got:
                while not room.acquire(timeout=1.0):
                    if fan.stop.is_set():
                        return
                fan.queue.put((room, got))
    except ReferenceError:      # the owner dropped the fan-in
        return
    finally:
        _waiters.gone(me)


class _SlotReader:
    """The :class:`FanIn` of a cluster :class:`Reader`: a thread per hash slot reading that slot's
    streams from its own positions (:attr:`ids`, ahead of the reader's by what is queued).

    Each thread keeps a connection of its own to the slot's node and sends XREAD on it itself:
    through redis-py's command layer the same reads of 30 sources at 50 frames/s each took 29 % of
    a core, on a held connection 13 % (hiredis in both; measured on loopback). After an error there
    (the node failed, or moved the slot) the connection is dropped and the read made through the
    cluster client, which refreshes its slot map and follows MOVED.
    """

    def __init__(self, bus: Bus, ids: dict[str, str]):
        self.bus = bus
        self.lock = threading.Lock()
        self.ids = dict(ids)
        self.conns: dict[int, tuple[str, Any]] = {}     # slot -> (node name, connection), one thread each
        self.fan = FanIn(self._fetch, name="xread-slot", what=self._what)

    def _what(self, slot: int) -> str:
        with self.lock:
            stream = next((s for s in self.ids if _slot(s) == slot), None)
        return on_node("read sources", self.bus.node_name(stream) if stream is not None else UNSERVED)

    def add(self, stream: str, entry_id: str) -> None:
        with self.lock:
            self.ids[stream] = entry_id

    def remove(self, stream: str) -> None:
        with self.lock:
            self.ids.pop(stream, None)

    def read(self, count: int, block: int) -> list[Entry]:
        with self.lock:
            slots = {_slot(s) for s in self.ids}
        for slot in slots:
            self.fan.start(slot)
        return self.fan.read(count, block)

    def close(self) -> None:
        self.fan.close()

    def _fetch(self, slot: int, count: int, block: int) -> list[Entry] | None:
        with self.lock:
            mine = {s: i for s, i in self.ids.items() if _slot(s) == slot}
        if not mine:
            self._drop(slot)
            return None
        try:
            out = self._held_xread(slot, mine, count, block)
        except (*BROKER_ERRORS, redis.ResponseError):
            self._drop(slot, broken=True)
            out = _xread(self.bus, mine, count, block)
        with self.lock:
            for stream, entry_id, _ in out:
                if stream in self.ids:
                    self.ids[stream] = entry_id
        return out


    def _held_xread(self, slot: int, ids: dict[str, str], count: int, block: int) -> list[Entry]:
        node = self.bus.redis.get_node_from_key(next(iter(ids)))
        held = self.conns.get(slot)
        if held is None or held[0] != node.name:
            self._drop(slot)
            held = self.conns[slot] = (node.name, node.redis_connection.connection_pool.get_connection())
        conn = held[1]
        conn.send_command("XREAD", "COUNT", count, "BLOCK", block, "STREAMS", *ids, *ids.values())
        reply: Any = conn.read_response()
        # RESP3 (redis-py's default here): {stream: [[id, [field, value, ...]], ...]}; RESP2: [[stream, ...], ...]
        pairs = reply.items() if isinstance(reply, dict) else (reply or [])
        return [(_s(stream), _s(entry_id), dict(zip(flat[::2], flat[1::2])))
                for stream, entries in pairs for entry_id, flat in entries if flat is not None]

    def _drop(self, slot: int, *, broken: bool = False) -> None:
        held = self.conns.pop(slot, None)
        if held is None:
            return
        name, conn = held
        if broken:
            conn.disconnect()
        node = self.bus.redis.get_node(node_name=name)
        if node is not None and node.redis_connection is not None:
            node.redis_connection.connection_pool.release(conn)
        else:
            conn.disconnect()


class EventReader:
    """A consumer's read loop over fan-out streams: XREAD, each entry decoded, broker errors retried.

    :meth:`read` returns ``(stream, entry id, event)`` for the entries that decode (the bus counts
    and dead-letters the others); on a broker error it counts it, backs off and returns nothing,
    so the caller's loop goes on and the next read reconnects.

    Parameters
    ----------
    streams : iterable of str
        Read from their newest entry as of :meth:`open` (call it in ``setup`` when writers start
        after the reader; else the first read opens, so a broker down at start is retried too).
    kind : type
        What an entry decodes to (a schemas type or union; default any :data:`~schemas.Event`).
    what : str
        The read, as named in the reconnect log.
    backoff : Backoff, optional
        Shared with the caller's other broker calls (one retry pace per loop).
    """

    def __init__(self, bus: Bus, streams: Iterable[str] = (), *, kind: Any = Event, what: str = "read events",
                 block_ms: int = 500, backoff: Backoff | None = None):
        self.bus, self.kind, self.what, self.block_ms = bus, kind, what, block_ms
        self.streams = list(streams)
        self.backoff = backoff or Backoff()
        self.reader: Reader | None = None
        # one source's streams on a cluster: its outage is its node's, shared with every such reader
        # there, so ten dashboards following sources of a lost master say ``WHAT on HOST:PORT`` once
        # (readers of many sources say their nodes from their slot threads)
        self._one_slot = bus.cluster and len({_slot(s) for s in self.streams}) == 1

    def open(self) -> Reader:
        """The :class:`Reader`, created on first use (each stream's newest id is read then)."""
        if self.reader is None:
            self.reader = Reader(self.bus, self.streams, block_ms=self.block_ms)
        return self.reader

    def read(self, stop: threading.Event | None, *, count: int = 100, before=None) -> list[tuple[str, str, Any]]:
        """The next decoded events (``before``: a broker call of the caller's, run first under the
        same error policy, e.g. a lease scan that adds streams)."""
        def call():
            reader = self.open()
            if before is not None:
                before()
            return reader.read(count=count)

        # a ``before`` call may fail on another node: it keeps the plain name
        shared = before is None and self._one_slot
        what = on_node(self.what, self.bus.node_name(self.streams[0])) if shared else self.what
        entries = guarded(call, backoff=self.backoff, stop=stop, what=what, who=self if shared else None)
        events = [(stream, entry_id, self.bus.decode(stream, entry_id, fields, self.kind))
                  for stream, entry_id, fields in entries]
        return [e for e in events if e[2] is not None]

    def close(self) -> None:
        """Stop reading: the slot threads (cluster) end and an outage no longer waits on this reader."""
        _waiters.gone(self)
        if self.reader is not None:
            self.reader.close()


class Group:
    """A consumer in a consumer group: at-least-once delivery with a janitor.

    Parameters
    ----------
    max_deliveries : int
        An entry delivered this many times without an ACK is dead-lettered.
    claim_idle_ms : int
        Pending entries idle this long (their consumer presumably died) are claimed.
    """

    def __init__(self, bus: Bus, stream: str, group: str, consumer: str, *,
                 max_deliveries: int = 5, claim_idle_ms: int = 30000, block_ms: int = 500,
                 start: str = "0"):
        self.bus, self.stream, self.group, self.consumer = bus, stream, group, consumer
        self.max_deliveries, self.claim_idle_ms = max_deliveries, claim_idle_ms
        self.block_ms = min(block_ms, MAX_BLOCK_MS)
        self._claim_cursor = "0-0"
        try:
            bus.redis.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 10, block_ms: int | None = None) -> list[Entry]:
        """New entries for this consumer (``>``)."""
        block = self.block_ms if block_ms is None else min(block_ms, MAX_BLOCK_MS)
        # RESP2 shape: [(stream, [(id, fields or None if deleted), ...])]
        reply: Any = self.bus.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                               count=count, block=block or None)
        return [(self.stream, _s(i), f) for _, entries in reply or [] for i, f in entries if f is not None]

    def seek(self, entry_id: str) -> None:
        """Move the group to ``entry_id`` (``$``: deliver only entries added from now on)."""
        self.bus.redis.xgroup_setid(self.stream, self.group, entry_id)

    def ack(self, *entry_ids: str) -> int:
        return self.bus.redis.xack(self.stream, self.group, *entry_ids) if entry_ids else 0

    def keep(self, entry_ids: Sequence[str]) -> None:
        """Mark entries this consumer is still working on (a trigger in flight) as alive: their idle
        time restarts and their delivery count stays (XCLAIM JUSTID), so :meth:`claim_stale` neither
        claims them nor, claim after claim, dead-letters them while they are merely slow."""
        if entry_ids:
            self.bus.redis.xclaim(self.stream, self.group, self.consumer, 0, list(entry_ids), justid=True)

    def claim_stale(self, count: int = 50) -> list[Entry]:
        """XAUTOCLAIM entries idle past ``claim_idle_ms``; dead-letter those delivered too often.

        Returns the claimed entries that should be processed again by this consumer.
        """
        r = self.bus.redis
        # [next cursor, [(id, fields or None if deleted), ...], deleted ids]
        reply: Any = r.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                  start_id=self._claim_cursor, count=count)
        self._claim_cursor = _s(reply[0])
        claimed = [(_s(i), f) for i, f in reply[1] if f is not None]
        if not claimed:
            return []
        # [{"message_id": id, "times_delivered": n, ...}, ...]
        pending: Any = r.xpending_range(self.stream, self.group, min=claimed[0][0], max=claimed[-1][0],
                                        count=len(claimed) + 10, consumername=self.consumer)
        deliveries = {_s(p["message_id"]): int(p["times_delivered"]) for p in pending}
        retry: list[Entry] = []
        for entry_id, fields in claimed:
            n = deliveries.get(entry_id, 0)
            if n > self.max_deliveries:
                self.bus.dead_letter(self.stream, entry_id, fields, "max_deliveries", deliveries=n)
                self.ack(entry_id)
                log.warning("entry dead-lettered after repeated failures",
                            extra={"stream": self.stream, "id": entry_id, "deliveries": n})
            else:
                retry.append((self.stream, entry_id, fields))
        return retry

    def pending_count(self) -> int:
        return int(self.bus.redis.xpending(self.stream, self.group)["pending"])


_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """Exclusive, expiring ownership of a key: held while renewed, taken over when it lapses."""

    def __init__(self, bus: Bus, key: str, owner: str, ttl: float):
        self.bus, self.key, self.owner = bus, key, owner
        self.ttl_ms = max(1, int(ttl * 1000))
        self._renew = bus.redis.register_script(_RENEW)
        self._release = bus.redis.register_script(_RELEASE)

    def acquire(self) -> bool:
        return bool(self.bus.redis.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        """Extend the lease; False means it was lost (expired and maybe taken)."""
        return bool(self.bus.run_script(self._renew, [self.key], [self.owner, self.ttl_ms]))

    def release(self) -> bool:
        return bool(self.bus.run_script(self._release, [self.key], [self.owner]))

    def holder(self) -> str | None:
        val = self.bus.redis.get(self.key)
        return _s(val) if val else None


class Outage:
    """A state that logs its changes once: down (a warning with the first error) and back (info).

    ``remind_s``: while it stays down, the warning is logged again this often (None: never).
    """

    def __init__(self, down: str, back: str, *, remind_s: float | None = None, **extra):
        self.down_msg, self.back_msg, self.extra, self.down = down, back, extra, False
        self.remind_s, self._logged = remind_s, 0.0

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if not self.down or (self.remind_s is not None and now - self._logged >= self.remind_s):
            log.warning(self.down_msg, extra={**self.extra, "error": str(exc)[:200]})
            self._logged = now
        self.down = True

    def ok(self) -> None:
        if self.down:
            log.info(self.back_msg, extra=self.extra)
        self.down = False


# Broker outages are kept per call, not per process: with a Redis Cluster one slot's master can be
# down while others answer, and a process-wide "back" would flap.
_broker_outages: dict[str, Outage] = {}


def note_reconnect(exc: Exception, what: str) -> None:
    """Count one broker failure (the caller backs off and retries); log it once per outage of ``what``
    (a daemon retries many times a second), again only every minute while it lasts."""
    BROKER_RECONNECTS.inc()
    outage = _broker_outages.get(what)
    if outage is None:
        outage = _broker_outages[what] = Outage(
            "broker unavailable; retrying (logged again when it is back, or in a minute)", "broker back",
            remind_s=60.0, during=what)
    outage.failed(exc)


def on_node(what: str, node: str) -> str:
    """``what`` as the log names one node's share of it (:meth:`Bus.node_name`; "" on a single server)."""
    return f"{what} on {node}" if node else what


class _Waiters:
    """Outages that many readers wait on together: the streams of one cluster node, each read by a
    thread (or a poll's slot) of its own. The first to fail says it (:func:`note_reconnect`), the
    last to read again says it is back: a master with 67 sources is one line, not 67."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.what_of: dict[object, str] = {}

    def failed(self, exc: Exception, what: str, who: object) -> None:
        with self.lock:
            before = self.what_of.get(who)
            self.what_of[who] = what
            orphan = before if before is not None and before != what and before not in self.what_of.values() else None
        if orphan is not None:      # its slot moved (a failover): nobody waits on the old name any more
            _broker_outages.pop(orphan, None)
        note_reconnect(exc, what)

    def ok(self, who: object) -> None:
        """``who`` read again; cheap when it was not waiting."""
        if who not in self.what_of:
            return
        with self.lock:
            what = self.what_of.pop(who, None)
            if what is None or what in self.what_of.values():
                return
        note_back(what)

    def gone(self, who: object) -> None:
        """``who`` stopped reading (its reader closed): it waits on nothing any more."""
        with self.lock:
            self.what_of.pop(who, None)


_waiters = _Waiters()


def note_back(what: str) -> None:
    """A call that failed (:func:`note_reconnect`) worked again: say so once. Cheap when there was
    no outage (a dict lookup): call it after every success of a noted call."""
    outage = _broker_outages.get(what)
    if outage is not None:
        outage.ok()


def guarded(call, *, backoff: Backoff, stop: threading.Event | None, what: str, default=(), who=None):
    """Run one broker call for a daemon loop: on a broker error count it, back off, return ``default``.

    The loop keeps going and the next call reconnects, so a broker restart never kills a daemon.
    ``who``: a reader that shares the outage of ``what`` with the others waiting on it (:class:`_Waiters`).
    """
    try:
        result = call()
    except BROKER_ERRORS as exc:
        if who is None:
            note_reconnect(exc, what)
        else:
            _waiters.failed(exc, what, who)
        backoff.wait(stop)
        return default
    if who is None:
        note_back(what)
    else:
        _waiters.ok(who)
    backoff.reset()
    return result
