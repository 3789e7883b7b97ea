"""OSC clock: cues -> OSC messages (python-osc) -> UDP datagrams to one or more targets.

Address space (every message is one UDP datagram, sent to every ``--osc`` target):

=====================  ==============================================  =============================
address                arguments                                       when
=====================  ==============================================  =============================
``/beatbus/start``     (none)                                          the transport starts (a downbeat)
``/beatbus/beat``      ``i`` beat, ``i`` beat in bar, ``f`` bpm,       every beat
                       ``f`` confidence
``/beatbus/bar``       ``i`` bar, ``i`` beats per bar                  every downbeat (before its beat)
``/beatbus/tempo``     ``f`` bpm                                       at the start and when the smoothed
                                                                       tempo moved by ``tempo_step_bpm``
``/beatbus/section``   ``s`` label, ``f`` confidence                   the section changes (on arrival)
``/beatbus/stop``      (none)                                          the music stopped / the source ended
=====================  ==============================================  =============================

Beat and bar numbers are the beat tracker's (beats and bars since the stream started) at lock,
then the clock's own count. Beat, bar and tempo messages are sent ``output_latency_ms`` early;
a beat or bar message that could only go out more than ``late_limit_ms`` after its time is
dropped (a late beat is worse than none).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from beatbus.errors import ConfigError, require

from .schedule import Cue

__all__ = ["OscTarget", "parse_target", "osc_message", "section_message", "OscSender", "ADDRESSES"]

ADDRESSES = {"start": "/beatbus/start", "beat": "/beatbus/beat", "bar": "/beatbus/bar", "tempo": "/beatbus/tempo",
             "section": "/beatbus/section", "stop": "/beatbus/stop"}


@dataclass(frozen=True)
class OscTarget:
    host: str
    port: int
    family: int
    address: tuple

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_target(text: str) -> OscTarget:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> a resolved UDP target; ConfigError on anything else."""
    host, sep, port = str(text).strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"OSC target {text!r} must be HOST:PORT, e.g. 127.0.0.1:9000")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"OSC target {text!r}: port {port} is not 1-65535")
    try:
        ipaddress.ip_address(host)
        flags = socket.AI_NUMERICHOST
    except ValueError:
        flags = 0
    try:
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM, flags=flags)
    except socket.gaierror as exc:
        raise ConfigError(f"OSC target {text!r}: host {host!r} does not resolve ({exc.strerror})") from None
    family, _, _, _, address = info[0]
    return OscTarget(host, int(port), family, address)


def _builder():
    return require("pythonosc.osc_message_builder", "the OSC clock").OscMessageBuilder


def _build(address: str, *args) -> bytes:
    b = _builder()(address=address)
    for a in args:
        b.add_arg(a, "f" if isinstance(a, float) else "i" if isinstance(a, int) else "s")
    return b.build().dgram


def osc_message(cue: Cue) -> bytes | None:
    """The OSC datagram of one cue (None for ticks: OSC gets beats, not pulses)."""
    if cue.kind == "beat":
        return _build(ADDRESSES["beat"], int(cue.beat), int(cue.beat_in_bar), float(round(cue.bpm, 3)),
                      float(round(cue.confidence, 3)))
    if cue.kind == "bar":
        return _build(ADDRESSES["bar"], int(cue.bar), int(cue.meter))
    if cue.kind == "tempo":
        return _build(ADDRESSES["tempo"], float(round(cue.bpm, 3)))
    if cue.kind in ("start", "stop"):
        return _build(ADDRESSES[cue.kind])
    return None


def section_message(label: str, confidence: float) -> bytes:
    return _build(ADDRESSES["section"], str(label), float(round(confidence, 3)))


class OscSender:
    """One UDP socket per address family, every datagram to every target.

    A send error (no route, a port that answers ICMP unreachable) is counted and returned,
    never raised: the clock goes on for the other targets.
    """

    def __init__(self, targets: list[OscTarget]):
        if not targets:
            raise ConfigError("no OSC target: give --osc HOST:PORT")
        _builder()                                   # the extra is installed, or one line now
        self.targets = list(targets)
        self._socks = {t.family: socket.socket(t.family, socket.SOCK_DGRAM) for t in targets}
        self.errors = 0

    def send(self, dgram: bytes) -> list[tuple[OscTarget, OSError]]:
        failed = []
        for t in self.targets:
            try:
                self._socks[t.family].sendto(dgram, t.address)
            except OSError as exc:
                self.errors += 1
                failed.append((t, exc))
        return failed

    def close(self) -> None:
        for s in self._socks.values():
            s.close()

    def __str__(self) -> str:
        return ", ".join(str(t) for t in self.targets)
