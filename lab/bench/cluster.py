"""A private Redis Cluster on loopback for benchmarks and tests: masters + one replica each of
Debian's redis-server, joined by ``redis-cli --cluster create`` (the tool operators use)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis.crc import key_slot

from beatbus import keys
from beatbus.errors import ConfigError

NODE_TIMEOUT_MS = 3000     # what the README recommends against lease_ttl and buffer_seconds


def free_port() -> int:
    """A loopback TCP port free now (the servers the benchmarks start bind it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class LocalCluster:
    """Six ``redis-server --cluster-enabled yes`` on loopback joined into one cluster.

    ``url`` is beatbus's cluster URL (``redis+cluster://`` to one seed node); :meth:`kill_master`
    kill -9s the master serving a slot, as a crashed host would."""

    def __init__(self, tmp: Path, *, masters: int = 3):
        self.binary, self.cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not (self.binary and self.cli):
            raise ConfigError("a local Redis Cluster needs redis-server and redis-cli (Debian: redis-server, redis-tools)")
        self.tmp = tmp
        self.ports: list[int] = []
        for _ in range(2 * masters):
            self.ports.append(self._new_port())
        self.masters = masters
        self.procs: dict[int, subprocess.Popen] = {}

    def _new_port(self) -> int:
        """A free node port clear of this cluster's others and their bus ports (two bind(0) calls in a
        row may get the same port)."""
        while True:
            port = _node_port()
            if not {port, port + 10000} & {q + d for q in self.ports for d in (0, 10000)}:
                return port

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node_url(self, port: int) -> str:
        """A plain URL of one node (what a single-node client would be pointed at)."""
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> LocalCluster:
        for port in self.ports:
            self._start_node(port)
        for i in range(len(self.ports)):
            for _ in range(5):
                if self._wait_ping(self.ports[i]):
                    break
                # its port was taken between picking and binding (a CI run once lost one): another
                self.procs.pop(self.ports[i]).kill()
                self.ports[i] = self._new_port()
                self._start_node(self.ports[i])
            else:
                raise RuntimeError(f"redis-server did not start on 5 ports in a row (last {self.ports[i]})")
        subprocess.run([self.cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(self.info(p).get("cluster_state") == "ok" for p in self.ports):
                # every replica attached and in sync, so a failover has someone to promote
                if len(self.replicas_in_sync()) == self.masters:
                    return self
            time.sleep(0.2)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok with synced replicas")

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_node(self, port: int) -> None:
        d = self.tmp / f"node-{port}"
        d.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             "--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ping(self, port: int) -> bool:
        """True once the node started on ``port`` answers (itself, not another server that took the
        port); False if it exited (its port taken) or never answered."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.procs[port].poll() is not None:
                return False
            try:
                if self.cmd(port, "PING", timeout=2) == "PONG":
                    return f"process_id:{self.procs[port].pid}" in self.cmd(port, "INFO", "server")
            except subprocess.TimeoutExpired:       # something else listens there and does not answer
                pass
            time.sleep(0.05)
        return False

    def cmd(self, port: int, *args: str, timeout: float = 10) -> str:
        r = subprocess.run([self.cli, "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
        return r.stdout.strip()

    def info(self, port: int) -> dict[str, str]:
        return dict(line.split(":", 1) for line in self.cmd(port, "CLUSTER", "INFO").splitlines() if ":" in line)

    def nodes(self) -> list[dict]:
        """``CLUSTER NODES`` as seen by a live node: id, port, role (master/slave), master id, slots."""
        for port in self.ports:
            if port in self.procs and self.procs[port].poll() is None:
                out = self.cmd(port, "CLUSTER", "NODES")
                if out:
                    break
        rows = []
        for line in out.splitlines():
            f = line.split()
            flags = f[2].split(",")
            rows.append({"id": f[0], "port": int(f[1].split("@")[0].rsplit(":", 1)[1]),
                         "role": "master" if "master" in flags else "slave",
                         "failed": "fail" in flags or "fail?" in flags, "master": f[3], "slots": f[8:]})
        return rows

    def replicas_in_sync(self) -> list[int]:
        ports = []
        for port in self.ports:
            info = dict(line.split(":", 1) for line in self.cmd(port, "INFO", "replication").splitlines()
                        if ":" in line)
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                ports.append(port)
        return ports

    def master_of_slot(self, slot: int) -> int:
        for node in self.nodes():
            if node["role"] != "master" or node["failed"]:
                continue
            for rng in node["slots"]:
                lo, _, hi = rng.partition("-")
                if rng[0] != "[" and int(lo) <= slot <= int(hi or lo):
                    return node["port"]
        raise LookupError(f"no master serves slot {slot}")

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the replicas of the master on ``port``."""
        rows = self.nodes()
        master = next(n["id"] for n in rows if n["port"] == port)
        return [n["port"] for n in rows if n["master"] == master]

    def master_ports(self) -> list[int]:
        return sorted(n["port"] for n in self.nodes() if n["role"] == "master" and not n["failed"])

    def kill(self, port: int) -> None:
        """kill -9 one node (no shutdown, no save: a crash)."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait()
        self.procs.clear()


def source_on_each_master(cluster: LocalCluster, prefix: str = "src") -> list[str]:
    """One source name per master (``src0``, ``src1``, ... picked until every master has one)."""
    by_master: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}"
        port = cluster.master_of_slot(key_slot(keys.stream(name, "audio").encode()))
        by_master.setdefault(port, name)
        if len(by_master) == cluster.masters:
            return [by_master[p] for p in sorted(by_master)]
    raise RuntimeError("could not place a source on every master")
