"""WLED discovery: the controllers that announce themselves over mDNS (``_wled._tcp``).

WLED registers ``_wled._tcp.local.`` with its host name (``wled-XXXXXX.local``), its web port and a
TXT record that carries its MAC (``mac``); it receives DDP on UDP 4048, so every device found is
offered as ``ddp://ADDRESS`` (:mod:`.outputs.ddp`). The browse listens for a bounded time and
answers what replied within it: mDNS has no "that was everyone".

python-zeroconf (LGPL-2.1) is the optional extra ``wled``, imported only here and only when a
browse runs. ``BEATBUS_MDNS_INTERFACES`` (comma-separated IPv4 or IPv6 addresses of this machine,
e.g. ``127.0.0.1``) limits the browse to those interfaces; default: every interface.
"""
from __future__ import annotations

import ipaddress
import os
import queue
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from beatbus.errors import BeatbusError, ConfigError, DependencyError

from .outputs.ddp import DdpOutput

__all__ = ["SERVICE", "DEFAULT_TIMEOUT_S", "MAX_TIMEOUT_S", "INTERFACES_ENV", "WledDevice", "DiscoveryError",
           "discover", "device_name"]

SERVICE = "_wled._tcp.local."
DEFAULT_TIMEOUT_S = 2.0
MAX_TIMEOUT_S = 60.0
INTERFACES_ENV = "BEATBUS_MDNS_INTERFACES"
MISSING_EXTRA = "WLED discovery needs the optional extra: pip install 'beatbus[wled]'"
_RESOLVE_GRACE_S = 0.5      # a name heard at the very end gets this long to resolve its address
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.:#@-]+")   # schemas.LED_DEVICE_PATTERN's complement


class DiscoveryError(BeatbusError):
    """mDNS cannot run here (no socket on port 5353, or an interface that is not this machine's)."""


@dataclass(frozen=True)
class WledDevice:
    """One controller that answered.

    Attributes
    ----------
    name : str
        Its mDNS instance name (WLED announces its host name, e.g. ``wled-kitchen``).
    host : str
        Its mDNS host, e.g. ``wled-kitchen.local``.
    addresses : list of str
        IPv4 addresses first, then IPv6.
    port : int
        The port it announced (WLED's web page and JSON API, usually 80).
    output : str
        The output URL to add it with: ``ddp://ADDRESS`` (DDP, UDP 4048).
    device : str
        ``name`` as an LED device name (characters outside ``[A-Za-z0-9_.:#@-]`` become ``-``).
    mac : str or None
        The ``mac`` of its TXT record, when it has one.
    properties : dict
        Its whole TXT record (keys and values as text).
    """

    name: str
    host: str
    addresses: list[str]
    port: int
    output: str
    device: str
    mac: str | None = None
    properties: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(name: str) -> str:
    """An mDNS instance name as an LED device name (``^[A-Za-z0-9_.:#@-]{1,64}$``)."""
    return _NOT_A_NAME.sub("-", name).strip("-")[:64] or "wled"


def _zeroconf():
    try:
        import zeroconf
    except ImportError:
        raise DependencyError(MISSING_EXTRA) from None
    return zeroconf


def _interfaces(zc_mod, interfaces: list[str] | None):
    """zeroconf's interface choice: the given addresses, else ``BEATBUS_MDNS_INTERFACES``, else all."""
    if interfaces is None:
        raw = os.environ.get(INTERFACES_ENV, "").strip()
        interfaces = [a.strip() for a in raw.split(",") if a.strip()] or None
    if not interfaces:
        return zc_mod.InterfaceChoice.All, zc_mod.IPVersion.V4Only
    try:
        versions = {ipaddress.ip_address(a).version for a in interfaces}
    except ValueError as exc:
        raise ConfigError(f"{INTERFACES_ENV}: {exc} (give this machine's addresses, e.g. 127.0.0.1)") from None
    # zeroconf's own dependency: it would skip an address that is not this machine's without a word
    import ifaddr

    mine = {ip.ip if isinstance(ip.ip, str) else ip.ip[0] for adapter in ifaddr.get_adapters() for ip in adapter.ips}
    strangers = [a for a in interfaces if a not in mine]
    if strangers:
        raise ConfigError(f"{INTERFACES_ENV}: {', '.join(strangers)} is not an address of this machine "
                          f"(it has {', '.join(sorted(mine))})")
    version = (zc_mod.IPVersion.All if versions == {4, 6} else
               zc_mod.IPVersion.V6Only if versions == {6} else zc_mod.IPVersion.V4Only)
    return list(interfaces), version


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else "" if value is None else str(value)


def _device(info) -> WledDevice | None:
    """A resolved ServiceInfo as a WledDevice (None while it has no address)."""
    addresses = sorted(set(info.parsed_scoped_addresses()), key=lambda a: (":" in a, a))
    if not addresses:
        return None
    name = info.name[:-len(SERVICE) - 1] if info.name.endswith("." + SERVICE) else info.name
    first = addresses[0]
    host_part = f"[{first}]" if ":" in first else first
    props = {_text(k): _text(v) for k, v in (info.properties or {}).items() if k is not None}
    return WledDevice(name=name, host=(info.server or "").rstrip("."), addresses=addresses, port=int(info.port or 0),
                      output=f"{DdpOutput.scheme}://{host_part}", device=device_name(name),
                      mac=props.get("mac") or None, properties=props)


def discover(timeout: float = DEFAULT_TIMEOUT_S, *, interfaces: list[str] | None = None) -> list[WledDevice]:
    """Browse ``_wled._tcp.local.`` for ``timeout`` seconds; the devices that answered, by name.

    Parameters
    ----------
    timeout : float
        How long to listen, in seconds (0 < timeout <= 60). A name heard whose address is not
        known yet is asked for it, 0.5 s at most, so the browse may end that much later.
    interfaces : list of str, optional
        Addresses of this machine's interfaces to browse on (e.g. ``["127.0.0.1"]``); default
        ``BEATBUS_MDNS_INTERFACES``, else every interface.

    Raises
    ------
    DependencyError
        python-zeroconf (the extra ``wled``) is not installed.
    ConfigError
        A timeout out of range, or an interface that is not an IP address.
    DiscoveryError
        The mDNS sockets could not be opened.
    """
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ConfigError(f"timeout {timeout:g} s: give more than 0 and at most {MAX_TIMEOUT_S:g} s")
    zc_mod = _zeroconf()
    choice, version = _interfaces(zc_mod, interfaces)
    # Two listeners: one-shot queries from a free port, which responders answer straight back to it
    # (RFC 6762 5.1 and 6.7: no other mDNS socket of this machine can take the answer), and the mDNS
    # port itself for multicast answers and announcements. Either alone will do.
    zcs, failures = [], []
    for unicast in (True, False):
        try:
            zcs.append(zc_mod.Zeroconf(interfaces=choice, ip_version=version, unicast=unicast))
        except OSError as exc:
            failures.append(exc)
    if not zcs:
        raise DiscoveryError(f"mDNS cannot listen here: {failures[-1]}")
    heard: queue.Queue[tuple[Any, str]] = queue.Queue()

    def listen(zc):
        def on_change(zeroconf, service_type, name, state_change):     # the browser's thread: hand it over
            if state_change is not zc_mod.ServiceStateChange.Removed:
                heard.put((zc, name))
        return on_change

    found: dict[str, WledDevice] = {}
    pending: dict[str, tuple[Any, Any]] = {}
    deadline = time.monotonic() + timeout
    browsers = [zc_mod.ServiceBrowser(zc, SERVICE, handlers=[listen(zc)]) for zc in zcs]
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                zc, name = heard.get(timeout=max(0.0, min(left, 0.1)))
                if name not in found and name not in pending:
                    pending[name] = (zc, zc_mod.ServiceInfo(SERVICE, name))
            except queue.Empty:
                pass
            for name, (zc, info) in list(pending.items()):
                # the answer usually carries its SRV, TXT and A records at once: the cache has them;
                # else ask, never past the window's end and its grace
                ms = int(max(0.05, min(deadline + _RESOLVE_GRACE_S - time.monotonic(), _RESOLVE_GRACE_S)) * 1000)
                if (info.load_from_cache(zc) or info.request(zc, ms)) and (device := _device(info)) is not None:
                    found[name] = device
                    del pending[name]
            if left <= 0:
                break
    finally:
        for browser in browsers:
            browser.cancel()
        for zc in zcs:
            zc.close()
    return sorted(found.values(), key=lambda d: d.name.lower())
