"""Test helpers: free ports, a real nats-server, and a real node started with `avadios up`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from avadios.devnet import free_ports
from avadios.supervisor import nats_server_binary

AVADIOS = str(Path(sys.executable).parent / "avadios")


def free_port() -> int:
    return free_ports(1)[0]


def cli_json(*args: str, ok: bool = True) -> Any:
    """Run `avadios ARGS --json` as a script would and return what it printed (asserting success if `ok`)."""
    out = subprocess.run([AVADIOS, *args, "--json"], capture_output=True, text=True, timeout=120)
    if ok:
        assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "", interval: float = 0.3) -> None:
    """Poll `check` until it holds; fail the test (errors inside `check` are not hidden) after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class NatsProcess:
    """A real nats-server on a free port; restartable on the same port."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True

        wait_for(listening, 10, "nats-server to listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Node:
    """A node started by `avadios up` in a temporary home, as a user would start it."""

    home: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "up.out"

    def command(self, *args: str) -> list[str]:
        return [AVADIOS, *args, "--home", str(self.home)]

    def start(self, wait: bool = True) -> Node:
        self.home.mkdir(parents=True, exist_ok=True)
        # Every port free and our own, so test nodes never collide with each other or a node on this machine.
        env = {
            **os.environ,
            "AVADIOS_INFERENCE_THREADS": "2",
            "AVADIOS_P2P_PORT": str(free_port()),
            "AVADIOS_DHT_PORT": str(free_port()),
            **self.env,
        }
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self.command("up"),
                    "--api-port",
                    str(self.api_port),
                    "--nats-port",
                    str(self.nats_port),
                    *self.extra_args,
                ],
                stdout=out,
                stderr=out,
                env=env,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"avadios up exited with {self.proc.returncode}: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                reply = httpx.get(self.api_url + "/health", timeout=2)
                if reply.status_code == 200:
                    return reply.json()
            time.sleep(0.2)
        raise TimeoutError(f"the node did not become healthy within {timeout} s; see {self.home / 'logs'}")

    def node_file(self) -> dict[str, Any]:
        return json.loads((self.home / "run" / "node.json").read_text())

    def pid_of(self, process: str) -> int:
        pid = self.node_file()["processes"][process]["pid"]
        assert pid, f"{process} is not running"
        return int(pid)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@contextlib.contextmanager
def running_node(home: Path, *args: str, **env: str) -> Iterator[Node]:
    node = Node(home, list(args), env).start()
    try:
        yield node
    finally:
        node.stop()
