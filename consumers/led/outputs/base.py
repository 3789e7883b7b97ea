"""The output interface every LED protocol implements, and the parsed output URL.

An :class:`Output` turns one frame (RGB bytes, 3 per pixel) into its protocol's packets
and sends them. ``open`` may fail (DNS, refused TCP connection): the render loop retries
it with backoff while other devices keep running. UDP outputs implement :meth:`encode`
(frame -> datagrams), which tests and benchmarks also use directly.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, ClassVar

from beatbus.errors import ConfigError

from ..params import Param

__all__ = ["Output", "UdpOutput", "OutputSpec", "MAX_PIXELS", "resolve", "check_pixels"]

MAX_PIXELS = 65536      # render budget per device, whatever the protocol allows


@dataclass(frozen=True)
class OutputSpec:
    """A parsed output URL: ``scheme://host[:port]?params``."""
    url: str
    scheme: str
    host: str = ""
    port: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


def resolve(host: str, port: int, kind: int = socket.SOCK_DGRAM) -> tuple:
    """First address of ``host:port`` as ``(family, sockaddr)``; socket.gaierror if unknown."""
    info = socket.getaddrinfo(host, port, type=kind)
    return info[0][0], info[0][4]


class Output:
    """Base of every output.

    Parameters
    ----------
    spec : OutputSpec
        Parsed URL; ``spec.params`` already validated against ``PARAMS``.
    pixels : int
        Pixels per frame (already checked against :meth:`max_pixels`).
    """

    scheme: ClassVar[str] = ""
    default_port: ClassVar[int | None] = None
    transport: ClassVar[str] = "udp"           # udp | tcp | local
    default_fps: ClassVar[float] = 60.0
    PARAMS: ClassVar[dict[str, Param]] = {}

    def __init__(self, spec: OutputSpec, pixels: int):
        self.spec, self.pixels = spec, int(pixels)
        self.params = spec.params
        # not ``name``: protocols have their own names (sACN's source name) that must not collide
        self.device_name = spec.host or spec.scheme      # set by create_output

    @classmethod
    def max_pixels(cls, params: dict[str, Any]) -> int:
        return MAX_PIXELS

    @property
    def label(self) -> str:
        return self.spec.url

    def open(self) -> None:
        """Acquire sockets/connections; raises OSError when the peer cannot be reached."""

    def send(self, frame: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the peer (blackout / release packets where the protocol has them) and sockets."""


class UdpOutput(Output):
    """A UDP output to one unicast peer; subclasses implement :meth:`encode`."""

    def __init__(self, spec: OutputSpec, pixels: int):
        super().__init__(spec, pixels)
        self.sock: socket.socket | None = None

    def open(self) -> None:
        if self.sock is not None:
            return
        family, addr = resolve(self.spec.host, self.spec.port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.settimeout(0.1)
            # connect() checks the route now, and lets ICMP "port unreachable" surface
            # as ConnectionRefusedError on a later send (counted and retried with backoff)
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def encode(self, frame: bytes) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def send(self, frame: bytes) -> None:
        if self.sock is None:
            self.open()
        for packet in self.encode(frame):
            self.sock.send(packet)

    def release_packets(self) -> list[bytes]:
        """Packets that hand the device back (sent by :meth:`close`); none by default."""
        return []

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        try:
            for packet in self.release_packets():
                sock.send(packet)
        except OSError:
            pass
        finally:
            sock.close()


def check_pixels(cls: type[Output], params: dict[str, Any], pixels: int, url: str) -> None:
    limit = min(cls.max_pixels(params), MAX_PIXELS)
    if not 1 <= pixels <= limit:
        raise ConfigError(f"output {url}: pixels={pixels} must be 1..{limit} for {cls.scheme}")
