"""A Prometheus collector for the streams themselves: lag, ownership, trimming, dead letters.

The daemons report what they see (``beatbus_bus_lag_seconds`` ...); this reads the broker,
so it also sees what nobody reports: a consumer group falling behind, a source whose beat
lease nobody holds, a dead-letter stream filling up, a producer that went quiet. Reads
only (one pipeline per scrape, per node on a cluster); ``now`` is the broker's clock, the one
stream ids use.

Series, for every live source (heartbeat within ``max_age``; sources are bounded by the
deployment, kinds and roles are fixed words)::

    beatbus_stream_entries{source, kind}                  XLEN
    beatbus_stream_age_seconds{source, kind}              broker time - newest entry id
    beatbus_stream_trimmed_entries_total{source, kind}    entries added - length (MAXLEN trimming)
    beatbus_dead_letter_entries{source, kind}             XLEN of bb:{source}:kind:dead
    beatbus_group_lag_entries{source, kind, group}        entries not yet delivered to the group
    beatbus_group_pending_entries{source, kind, group}    delivered, not yet acknowledged
    beatbus_group_lag_seconds{source, kind, group}        newest entry id - last delivered id
    beatbus_checkpoint_lag_seconds{source, role}          newest audio id - the role's checkpoint
    beatbus_source_owned{source, role}                    1 while the role's lease is held
    beatbus_source_heartbeat_age_seconds{source}          since the producer's last heartbeat (1 h window)
    beatbus_source_reachable{source}                      0 while the node holding its keys does not answer
    beatbus_sources_live                                  sources with a heartbeat within max_age
    beatbus_streams_up                                    1 when the last scrape reached the broker
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import redis
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from beatbus import keys
from beatbus.bus import BROKER_ERRORS, Bus
from beatbus.log import get_logger

__all__ = ["StreamCollector", "id_ms"]

log = get_logger("beatbus.deploy.stream_metrics")
_WINDOW_S = 3600.0                             # heartbeats older than this are not reported


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def id_ms(entry_id) -> int:
    """Milliseconds part of a stream id (``1700000000000-3`` -> 1700000000000)."""
    return int(_s(entry_id).split("-", 1)[0])


class StreamCollector:
    """Collect per-source stream metrics from the broker at scrape time.

    Parameters
    ----------
    bus : Bus
        A client of the beatbus broker.
    max_age : float
        Seconds since a source's last heartbeat for it to count as live.
    """

    def __init__(self, bus: Bus, *, max_age: float = 30.0):
        self.bus = bus
        self.max_age = max_age

    def register(self, registry=REGISTRY) -> StreamCollector:
        registry.register(self)
        return self

    def _families(self) -> dict:
        g, c = GaugeMetricFamily, CounterMetricFamily
        sk, skg, sr = ["source", "kind"], ["source", "kind", "group"], ["source", "role"]
        return {
            "entries": g("beatbus_stream_entries", "Entries in a stream (XLEN)", labels=sk),
            "age": g("beatbus_stream_age_seconds", "Broker time minus the newest entry's id", labels=sk),
            "trimmed": c("beatbus_stream_trimmed_entries", "Entries trimmed from a stream by MAXLEN", labels=sk),
            "dead": g("beatbus_dead_letter_entries", "Entries in a dead-letter stream", labels=sk),
            "lag": g("beatbus_group_lag_entries", "Entries not yet delivered to a consumer group", labels=skg),
            "pending": g("beatbus_group_pending_entries", "Entries delivered to a group, not yet acknowledged",
                         labels=skg),
            "lag_s": g("beatbus_group_lag_seconds", "Newest entry id minus the group's last delivered id",
                       labels=skg),
            "ckpt": g("beatbus_checkpoint_lag_seconds", "Newest audio id minus a stateful role's checkpoint",
                      labels=sr),
            "owned": g("beatbus_source_owned", "1 while a stateful role's lease on the source is held", labels=sr),
            "heartbeat": g("beatbus_source_heartbeat_age_seconds", "Seconds since the producer's last heartbeat",
                           labels=["source"]),
            "reachable": g("beatbus_source_reachable", "0 while the broker node that holds the source's keys "
                           "does not answer (a Redis Cluster shard down)", labels=["source"]),
            "live": g("beatbus_sources_live", "Sources with a recent producer heartbeat"),
            "up": g("beatbus_streams_up", "1 when the stream collector's last scrape reached the broker"),
        }

    def describe(self) -> Iterable:
        return list(self._families().values())

    def collect(self) -> Iterable:
        fam = self._families()
        try:
            self._collect(fam)
            fam["up"].add_metric([], 1)
        except (redis.RedisError, *BROKER_ERRORS) as exc:
            log.warning("stream metrics unavailable", extra={"error": str(exc)[:200]})
            up = fam["up"]
            fam = self._families()
            fam["up"] = up
            up.add_metric([], 0)
        return list(fam.values())

    def _collect(self, fam: dict) -> None:
        r = self.bus.redis
        now_ms = self.bus.clock_ms()
        wall = time.time()
        beats = r.zrangebyscore(keys.SOURCES, wall - _WINDOW_S, "+inf", withscores=True)
        live = []
        for member, score in beats:
            source = _s(member)
            fam["heartbeat"].add_metric([source], max(0.0, wall - score))
            if wall - score <= self.max_age:
                live.append(source)
        fam["live"].add_metric([], len(live))
        if not live:
            return
        # per node: a shard that is down leaves its sources unreachable, not the scrape
        lost = set(self.bus.per_node(live, lambda source: keys.stream(source, keys.StreamKind.AUDIO),
                                     "read stream metrics", lambda part: self._read(fam, now_ms, part)))
        for source in live:
            fam["reachable"].add_metric([source], 0 if source in lost else 1)

    def _read(self, fam: dict, now_ms: int, part: list[str]) -> None:
        """The series of the sources ``part`` (one node's share): one pipelined round trip."""
        r = self.bus.redis
        pipe = r.pipeline(transaction=False)
        for source in part:
            for kind in keys.StreamKind.ALL:
                stream = keys.stream(source, kind)
                pipe.xinfo_stream(stream)
                pipe.xinfo_groups(stream)
                pipe.xlen(keys.dead_letter(stream))
            for role in keys.Role.STATEFUL:
                pipe.exists(keys.lease(source, role))
                pipe.get(keys.checkpoint(source, role))
        values = iter(pipe.execute(raise_on_error=False))
        for source in part:
            audio_last = None
            for kind in keys.StreamKind.ALL:
                info, groups, dead = next(values), next(values), next(values)
                if isinstance(dead, int) and dead:
                    fam["dead"].add_metric([source, kind], dead)
                if not isinstance(info, dict):          # no such stream (yet)
                    continue
                last = id_ms(info["last-generated-id"])
                if kind == keys.StreamKind.AUDIO:
                    audio_last = last
                fam["entries"].add_metric([source, kind], info["length"])
                fam["age"].add_metric([source, kind], max(0.0, (now_ms - last) / 1000))
                added = info.get("entries-added")
                if added is not None:
                    fam["trimmed"].add_metric([source, kind], max(0, added - info["length"]))
                for g in groups if isinstance(groups, list) else ():
                    name = _s(g["name"])
                    lag = g.get("lag")
                    delivered = id_ms(g["last-delivered-id"])
                    fam["pending"].add_metric([source, kind, name], g["pending"])
                    # lag is None when trimming hid how far behind the group is: use the ids
                    behind = max(0.0, (last - delivered) / 1000)
                    fam["lag"].add_metric([source, kind, name], lag if lag is not None else float("nan"))
                    fam["lag_s"].add_metric([source, kind, name], behind if lag != 0 else 0.0)
            for role in keys.Role.STATEFUL:
                held, ckpt = next(values), next(values)
                fam["owned"].add_metric([source, role], 1 if held == 1 else 0)
                if ckpt is not None and not isinstance(ckpt, Exception) and audio_last is not None:
                    fam["ckpt"].add_metric([source, role], max(0.0, (audio_last - id_ms(ckpt)) / 1000))
