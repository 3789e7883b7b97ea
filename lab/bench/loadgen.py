"""Many real-time sources from one process: the load generator of ``beatbus bench load``.

Fifty ``beatbus produce`` processes would spend more CPU importing Python than publishing
audio. :class:`ManySources` drives N real :class:`~producers.service.Publisher` objects
(same leases, heartbeats, buffering and wire format as the daemon) from one thread: every
source's chunk is released when its last sample is due in real time, exactly like a paced
source, and stamped with the wall time of its first sample; the frames due at one tick go to
the broker in one pipeline, so the generator itself never makes the sources late.

Run as ``python -m beatbus.lab.bench.loadgen --sources 50 [--file PATH] [--duration S]`` with
``REDIS_URL`` set; it stops on SIGTERM (each source then publishes its end-of-stream marker).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

from beatbus.bus import BROKER_ERRORS, Bus, note_back, note_reconnect
from beatbus.config import Settings
from beatbus.runtime import Service

__all__ = ["ManySources", "main"]


class ManySources(Service):
    """Publish ``n`` sources named ``<prefix>-000`` ... in real time.

    Parameters
    ----------
    bus : Bus
    settings : Settings
        ``sr``, ``hop`` and the producer settings every Publisher uses.
    n : int
        Number of sources.
    file : str, optional
        Loop this audio file on every source (start offsets staggered); default a click
        track per source, tempos spread over 90-150 BPM.
    """

    name = "loadgen"

    def __init__(self, bus: Bus, *, settings: Settings, n: int, prefix: str = "load", file: str | None = None):
        super().__init__()
        from beatbus import producers
        from beatbus.producers.service import Publisher

        self.bus, self.settings = bus, settings
        self.start_ns = time.time_ns()
        self.t0 = time.monotonic()
        self.publishers = []
        for i in range(n):
            if file:
                audio = producers.FileSource(file, sr=settings.sr, hop=settings.hop, realtime=False, loop=True,
                                             start_wall_ns=self.start_ns)
            else:
                bpm = 90.0 + 60.0 * i / max(1, n - 1)
                audio = producers.ClickSource(bpm, sr=settings.sr, hop=settings.hop, realtime=False,
                                              start_wall_ns=self.start_ns)
            self.publishers.append(Publisher(bus, audio, settings=settings, source=f"{prefix}-{i:03d}"))
        self.late = 0

    def setup(self) -> None:
        for p in self.publishers:
            p.setup()

    def step(self, stop: threading.Event) -> bool:
        due = int((time.monotonic() - self.t0) * self.settings.sr)     # samples captured so far
        hop = self.settings.hop
        for p in self.publishers:
            behind = 0
            while p.samples_out + hop <= due and not stop.is_set():
                if p.step(stop, flush=False) is False:
                    return False
                behind += 1
            self.late += max(0, behind - 1)
        self._send()
        next_due = self.t0 + (min(p.samples_out for p in self.publishers) + hop) / self.settings.sr
        stop.wait(max(0.0, next_due - time.monotonic()))
        return True

    def _send(self) -> None:
        """Every source's due frames in one pipeline (one round trip per tick, not one per frame:
        50 sources are 2500 frames/s); on a broker error they stay buffered in each Publisher."""
        pipe = self.bus.redis.pipeline(transaction=False)
        sent = []
        try:
            for p in self.publishers:
                p._keepalive()                   # lease renewal and heartbeat, once a heartbeat period
                sent.append((p, len(p.pending)))
                for fields in p.pending:
                    self.bus.publish_fields(p.stream, fields, maxlen=self.settings.maxlen_audio, pipeline=pipe)
            pipe.execute()
        except BROKER_ERRORS as exc:
            note_reconnect(exc, "publish audio (loadgen)")
            return
        note_back("publish audio (loadgen)")
        for p, n in sent:
            for _ in range(n):
                p.pending.popleft()

    def drain(self) -> None:
        for p in self.publishers:
            p.drain()


def main(argv: list[str] | None = None) -> int:
    from beatbus.commands import cli_settings, connect
    from beatbus.runtime import run_services

    ap = argparse.ArgumentParser(prog="python -m beatbus.lab.bench.loadgen", description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=50)
    ap.add_argument("--prefix", default="load", help="source names are PREFIX-000, PREFIX-001, ...")
    ap.add_argument("--file", help="loop this file on every source (default: click tracks)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--redis-url", dest="redis_url")
    ap.add_argument("--metrics-addr", dest="metrics_addr", default="off")
    ap.add_argument("--log-level", dest="log_level", default="warning")
    args = ap.parse_args(argv)
    args.config = None
    settings = cli_settings(args)
    with connect(settings, embedded_ok=False) as bus:
        svc = ManySources(bus, settings=settings, n=args.sources, prefix=args.prefix, file=args.file)
        rc = run_services([svc], metrics_addr=settings.metrics_addr, duration=args.duration)
        print(f"loadgen: {args.sources} sources, {svc.late} chunks released late", file=sys.stderr)
        return rc


if __name__ == "__main__":
    sys.exit(main())
