"""Which sources one instance of a stateful role serves: a :class:`~beatbus.bus.Lease` per source.

Every stateful per-source stage (beat, intensity and structure processors, the generation
policy) owns its sources through :class:`SourceLeases`: exactly one instance of a role holds a
source at a time, a dead instance's sources are taken over once its leases lapse, and instances
that discover sources from the registry split them fairly.
"""
from __future__ import annotations

import math
import time
from collections import Counter

from . import keys
from .bus import BROKER_ERRORS, Bus, Lease, Outage
from .log import get_logger

__all__ = ["SourceLeases"]

log = get_logger("leases")
KNOWN_S = 60.0       # sources heartbeating this recently count for the share while someone leases them
UNKNOWN = "(unknown: its node does not answer)"      # the holder of a lease that cannot be read


class SourceLeases:
    """The sources this instance owns for ``role``, each held by a lease that is kept renewed.

    :meth:`scan` (call it whenever :meth:`due`) renews the held leases and takes free sources:
    the fixed ones, or else live sources of the registry up to this instance's fair share,
    ``ceil(served sources / live instances of the role)``, where a source is served while it is
    live or leased. Discovering instances heartbeat in the instance registry
    (:meth:`Bus.instances <beatbus.bus.Bus.instances>`); an instance alone takes every source,
    and one holding more than its share hands back as many as the others have room for, so an
    instance that joins later gets its share. Instances with fixed sources take all of them and
    are not counted. :meth:`renew` is for inside long work (a catch-up): it renews only when a
    renewal is due, so a busy instance keeps its leases however long a step takes.

    Parameters
    ----------
    bus : Bus
    role : str
        Lease role (``beat``, ``intensity``, ...); one owner per source and role.
    owner : str
        This instance's id (the value of its leases).
    ttl : float
        Lease TTL in seconds: a dead owner's sources are free after it.
    heartbeat : float
        Seconds between renewals (at most a third of ``ttl`` is used); sources and instances
        are live while they heartbeat within ``max(3 * heartbeat, ttl)``.
    fixed : list of str, optional
        Own exactly these sources; None discovers the live sources of the registry.
    """

    def __init__(self, bus: Bus, role: str, owner: str, *, ttl: float, heartbeat: float,
                 fixed: list[str] | None = None):
        self.bus, self.role, self.owner, self.ttl = bus, role, owner, ttl
        self.fixed = [keys.check_source(s) for s in fixed] if fixed else None
        self.interval = min(heartbeat, ttl / 3)
        self.max_age = max(3 * heartbeat, ttl)
        self.held: dict[str, Lease] = {}     # in the order taken
        self.live: list[str] = []            # the candidates of the last scan
        self._next_scan = 0.0
        self._renewed = -math.inf            # monotonic time of the last renewal round
        # on a cluster the registry has a node of its own: while it fails over, the sources held are
        # served on (their leases are renewed on their own nodes) and discovery waits
        self._registry = Outage("source registry unavailable; serving the sources held", "source registry back",
                                role=role)

    def owns(self, source: str) -> bool:
        return source in self.held

    def due(self) -> bool:
        return time.monotonic() >= self._next_scan

    def scan(self) -> None:
        """Renew the held leases, take free sources up to the share, hand back those above it.

        :attr:`held` is the result: a caller adopts the sources new in it and drops those gone.
        """
        self._next_scan = time.monotonic() + self.interval
        self._renew_all()
        if self.fixed is not None:
            self.live = self.fixed
            self._take(self.fixed, math.inf)
            return
        try:
            self.live = self.bus.sources(max_age=self.max_age)
            peers = [i for i in self.bus.instances(self.role, self.max_age) if i != self.owner]
        except BROKER_ERRORS as exc:
            self._registry.failed(exc)
            return
        self._registry.ok()
        holders = self._holders()
        # Served: live, or leased by someone. A producer whose heartbeat is late (an overloaded
        # host) still has its owner; counting only live sources made the share swing and
        # instances hand sources back and forth.
        served = {name for name, holder in holders.items() if holder or name in self.live}
        share = math.ceil(len(served) / (1 + len(peers)))
        free = [name for name in self.live if holders.get(name) is None]
        mine = sum(1 for name in self.held if name in served)
        if mine < share:
            self._take(free, share - mine)
        elif mine > share:
            # only as many as the others have room for once they took the free ones: a source
            # handed back with no taker would go unserved
            counts = Counter(holders.values())
            room = sum(max(0, share - counts[peer]) for peer in peers) - len(free)
            self._hand_back(min(mine - share, room), served)

    def renew(self) -> None:
        """Renew every lease if a renewal is due (a clock check otherwise); a lost one leaves :attr:`held`."""
        if time.monotonic() - self._renewed >= self.interval:
            self._renew_all()

    def release_all(self) -> None:
        """Give every lease up and leave the instance registry (on the way out). Without a broker
        nothing is lost: the leases lapse after the TTL and the registry entry ages out."""
        # per node, so a lost shard's lease does not keep the others held; one failed call per node
        # at most, and nothing logged: the daemon is on its way out
        for part in self.bus.by_node(list(self.held), self._key).values():
            try:
                for name in part:
                    self.held[name].release()
            except BROKER_ERRORS:
                pass
        self.held.clear()
        try:
            if self.fixed is None:
                self.bus.leave(self.role, self.owner)
        except BROKER_ERRORS:
            pass

    # -- internals --------------------------------------------------------------------
    def _renew_all(self) -> None:
        self._renewed = time.monotonic()
        if self.fixed is None:
            try:
                self.bus.join(self.role, self.owner)    # alive as long as the leases are renewed
            except BROKER_ERRORS as exc:
                self._registry.failed(exc)
        def renew(names: list[str]) -> None:
            for name in names:
                # A lapsed lease nobody took (e.g. the broker restarted empty) is simply re-acquired,
                # keeping the source's state; one taken by another instance is given up.
                lease = self.held[name]
                if not lease.renew() and not lease.acquire():
                    log.warning("lease lost to another instance; dropping source",
                                extra={"source": name, "role": self.role, "holder": lease.holder()})
                    del self.held[name]

        # per node: while one master is down, its sources stay held (their streams are on it too, so
        # there is nothing to serve; a lease that lapses meanwhile is re-acquired) and the rest renew
        self.bus.per_node(list(self.held), self._key, f"renew leases ({self.role})", renew)

    def _key(self, source: str) -> str:
        return keys.lease(source, self.role)

    def _holders(self) -> dict[str, str | None]:
        """Lease holder of every source heartbeating in the last ``KNOWN_S`` (one pipelined round trip
        per node); ``UNKNOWN`` where its node does not answer, so nobody takes it meanwhile."""
        names = self.bus.sources(max_age=max(KNOWN_S, self.max_age))
        holders: dict[str, str | None] = {}

        def read(part: list[str]) -> None:
            holders.update(zip(part, self.bus.get_many([self._key(n) for n in part])))

        for name in self.bus.per_node(names, self._key, f"read lease holders ({self.role})", read):
            holders[name] = UNKNOWN
        return holders

    def _take(self, names: list[str], count: int | float) -> None:
        """Acquire up to ``count`` of ``names`` not held yet (those whose node is down are left)."""
        def take(part: list[str]) -> None:
            nonlocal count
            for name in part:
                if count <= 0:
                    return
                lease = Lease(self.bus, self._key(name), self.owner, self.ttl)
                if lease.acquire():
                    self.held[name] = lease
                    count -= 1

        self.bus.per_node([n for n in names if n not in self.held], self._key, f"take leases ({self.role})", take)

    def _release(self, names: list[str]) -> None:
        """Give up the leases of ``names``, per node: one on a node that does not answer lapses by itself."""
        leases = {name: self.held.pop(name) for name in names}

        def release(part: list[str]) -> None:
            for name in part:
                leases[name].release()

        self.bus.per_node(names, self._key, f"release leases ({self.role})", release)

    def _hand_back(self, count: int, served: set[str]) -> None:
        if count <= 0:
            return
        newest = [n for n in reversed(self.held) if n in served][:count]   # the least state lost
        self._release(newest)
        log.info("sources handed back: above the fair share", extra={"sources": newest, "role": self.role})
