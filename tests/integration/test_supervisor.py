"""`avadios up` as a process tree: clean Ctrl-C, refusals before start, replicas, the API key off loopback, crash
loops and capped logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from avadios import supervisor
from avadios.config import load_config
from avadios.supervisor import Child, Supervisor
from tests.helpers import AVADIOS, Node, free_port, running_node, wait_for


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    node = Node(tmp_path / "home").start()
    children = node.descendants()
    names = {p.name() for p in children}
    assert "nats-server" in names and len(children) >= 4, names
    assert node.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [(p.pid, p.status()) for p in alive]
    assert not (node.home / "run" / "node.json").exists()


def test_killing_the_supervisor_outright_takes_its_children_down(tmp_path: Path) -> None:
    node = Node(tmp_path / "home").start()
    children = node.descendants()
    assert node.proc is not None
    node.proc.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel's parent-death signal must do it
    node.proc.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    # A zombie has exited; it only waits for init (no longer our supervisor) to reap it.
    running = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not running, [(p.pid, p.name()) for p in running]


def test_a_taken_port_is_named_and_up_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [AVADIOS, "up", "--home", str(tmp_path / "home"), "--api-port", str(port), "--nats-port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "--api-port" in result.stderr


def test_a_node_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert subprocess.run([AVADIOS, "id", "--home", str(home)], capture_output=True).returncode == 0
    key = home / "node.key"
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    result = subprocess.run(
        [AVADIOS, "up", "--home", str(home), "--api-port", str(free_port()), "--nats-port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "chmod 600" in result.stderr


def test_a_second_node_on_the_same_home_is_refused(tmp_path: Path) -> None:
    with running_node(tmp_path / "home") as node:
        result = subprocess.run(
            [*node.command("up"), "--api-port", str(free_port()), "--nats-port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "already running" in result.stderr


def test_two_inference_replicas_both_take_work_and_off_loopback_the_api_needs_the_key(tmp_path: Path) -> None:
    with running_node(tmp_path / "home", "--replicas", "inference=2", "--api-host", "0.0.0.0") as node:
        key_file = node.home / "api.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        auth = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        body = {"model": "default", "prompt": "Once upon a time", "max_tokens": 2, "temperature": 0.9}
        url = node.api_url + "/v1/completions"
        denied = httpx.post(url, json=body)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(node.api_url + "/health").status_code == 200  # probes need no key

        def both_serving() -> bool:
            health = httpx.get(node.api_url + "/health").json()
            return len([s for s in health["services"]["inference"] if s["status"] == "serving"]) == 2

        wait_for(both_serving, 60, "both inference replicas to serve")
        for _ in range(16):
            assert httpx.post(url, json=body, headers=auth, timeout=60).status_code == 200

        def served() -> dict[int, int]:
            replicas = httpx.get(node.api_url + "/health").json()["services"]["inference"]
            return {s["replica"]: s["requests_served"] for s in replicas}

        # /health shows each replica's last heartbeat (one a second): wait for both to report their work
        wait_for(lambda: sum(served().values()) >= 16, 10, "heartbeats that count all 16 requests")
        assert set(served()) == {0, 1} and all(n > 0 for n in served().values()), served()
        status = json.loads(node.cli("status", "--json").stdout)
        assert {"inference-0", "inference-1"} <= set(status["processes"])


def test_a_generation_past_the_request_deadline_gets_504_and_the_node_keeps_serving(tmp_path: Path) -> None:
    with running_node(tmp_path / "home", AVADIOS_REQUEST_TIMEOUT_S="3") as node:
        url = node.api_url + "/v1/completions"
        slow = {"model": "default", "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0.9}
        reply = httpx.post(url, json=slow, timeout=60)
        assert reply.status_code == 504, reply.text
        assert reply.json()["error"]["code"] == "timeout"
        quick = {"model": "default", "prompt": "Hello", "max_tokens": 2, "temperature": 0.9}
        assert httpx.post(url, json=quick, timeout=60).status_code == 200


class _OneCrashingChild(Supervisor):
    """The real supervisor loop over one real process that prints 200 KB and exits 3 at once, every time."""

    def plan(self) -> None:
        script = "import sys; sys.stdout.write(('x' * 99 + '\\n') * 2000); sys.exit(3)"
        self.children.append(
            Child("crasher", [sys.executable, "-c", script], dict(os.environ), self.config.logs_dir / "crasher.log")
        )


async def test_a_process_in_a_crash_loop_is_given_up_its_log_stays_capped_and_status_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_MAX_S", 0.2)  # the same loop, without waiting 15 s between crashes
    config = load_config({"home": tmp_path, "log_max_bytes": 64 * 1024, "log_keep": 2}, env={})
    sup = _OneCrashingChild(config, embedded_nats=False)
    for folder in (config.logs_dir, config.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    await sup.start()
    watcher = asyncio.create_task(sup.watch())
    try:
        for _ in range(600):  # 30 s
            if sup.children[0].gave_up:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # it is not started again
        child = sup.children[0]
        assert child.pid is None and child.restarts == supervisor.CRASH_LOOP_EXITS - 1
        entry = json.loads((config.run_dir / "node.json").read_text())["processes"]["crasher"]
        assert entry["state"] == "crash-loop"
        assert "exited 5 times in a row" in entry["detail"] and "exit code 3" in entry["detail"]
    finally:
        sup.request_stop()
        await watcher
        await sup.stop()
    # 5 runs printed 1 MB; the disk holds the current log and two older ones, each about 64 KiB
    logs = sorted(p.name for p in config.logs_dir.glob("crasher.log*"))
    assert logs == ["crasher.log", "crasher.log.1", "crasher.log.2"]
    assert all(p.stat().st_size <= 64 * 1024 + 100 for p in config.logs_dir.glob("crasher.log*"))
    assert all(line == "x" * 99 for line in (config.logs_dir / "crasher.log.1").read_text().splitlines())
