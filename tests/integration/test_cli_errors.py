"""The CLI when the node is not there: one line that says what to do, the documented exit code, JSON errors under
--json, and never a hang or a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import AVADIOS, free_port

EXIT_ERROR, EXIT_NOT_RUNNING = 1, 3
NODE_COMMANDS = [
    ["models"],
    ["ask", "hello"],
    ["wallet", "balance"],
    ["ledger", "status"],
    ["peers"],
    ["jobs"],
    ["files", "ls"],
    ["hosting"],
    ["say", "hello", "-o", "/tmp/avadios-cli-errors-test.wav"],
]


def run(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([AVADIOS, *args], capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", NODE_COMMANDS, ids=" ".join)
def test_without_a_node_every_command_says_how_to_start_one(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "home"
    result, _ = run(*command, "--home", str(home))
    assert result.returncode == EXIT_NOT_RUNNING
    assert f"no node running at {home}" in one_line_error(result) and "avadios up --home" in result.stderr
    as_json, _ = run(*command, "--home", str(home), "--json")
    error = json.loads(as_json.stdout)["error"]
    assert (error["reason"], error["exit_code"], as_json.returncode) == ("not_running", 3, 3)


@pytest.fixture
def stale_home(tmp_path: Path) -> Iterator[Path]:
    """A home whose node file names a live process but whose API and NATS ports answer nothing: a node that died
    without cleaning up (or a NATS that went away)."""
    home = tmp_path / "stale"
    (home / "run").mkdir(parents=True)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead_api, dead_nats = free_port(), free_port()
    state = {"pid": alive.pid, "api_url": f"http://127.0.0.1:{dead_api}", "nats_url": f"nats://127.0.0.1:{dead_nats}"}
    (home / "run" / "node.json").write_text(json.dumps({**state, "processes": {}}))
    yield home
    alive.kill()
    alive.wait()


@pytest.mark.parametrize("command", NODE_COMMANDS, ids=" ".join)
def test_a_node_that_does_not_answer_is_reported_within_seconds(stale_home: Path, command: list[str]) -> None:
    result, took = run(*command, "--home", str(stale_home))
    line = one_line_error(result)
    assert result.returncode == EXIT_NOT_RUNNING and took < 15, (took, line)
    assert "unreachable" in line or "no node answers" in line
    assert "avadios up --home" in line


def test_the_home_may_come_before_the_command(tmp_path: Path) -> None:
    home = tmp_path / "first"
    result, _ = run("--home", str(home), "status", "--json")
    assert result.returncode == EXIT_NOT_RUNNING
    assert json.loads(result.stdout) == {"running": False, "home": str(home.resolve())}
    assert run("--home", str(home), "id")[0].returncode == 0
    assert (home / "node.key").exists()


def test_a_missing_devnet_is_a_one_line_error(tmp_path: Path) -> None:
    result, _ = run("devnet", "status", "--dir", str(tmp_path / "none"))
    assert result.returncode == EXIT_ERROR and "no devnet in" in one_line_error(result)
    as_json, _ = run("devnet", "status", "--dir", str(tmp_path / "none"), "--json")
    assert json.loads(as_json.stdout)["error"]["reason"] == "devnet"


def test_a_bad_setting_is_refused_with_its_name_before_anything_starts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("api_port = 9000.7\n")
    result, _ = run("up", "--home", str(home))
    assert result.returncode == 2
    assert "api_port" in one_line_error(result) and "config.toml" in result.stderr
