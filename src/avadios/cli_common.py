"""What every `avadios` command module shares: exit codes, the console, JSON output, the node's HTTP client.

The command modules (`cli`, `cli_network`, `cli_wallet`) import this one and never each other, except that
`cli` collects the others' `register` functions into the parser.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from avadios import identity
from avadios.config import NodeConfig, load_config
from avadios.supervisor import read_node_file

# The documented exit status of every command (`avadios --help` shows it).
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130
EXIT_STATUS_HELP = (
    "exit status: 0 done; 1 the node or the network refused or failed (the message says why); "
    "2 bad usage, setting or input; 3 no node running for the home, or it does not answer; 130 interrupted. "
    'Under --json an error is {"error": {"message", "reason", "exit_code"}} on stdout (plus "code", the gRPC status, '
    "where a service refused)."
)
# How long a command waits to reach the node (HTTP connect, NATS connect) before it says the node is not there.
CONNECT_TIMEOUT_S = 3.0

# Messages for people go to stderr, so stdout carries only what a command prints for scripts (--json).
console = Console(stderr=True, soft_wrap=True)

Commands = Any  # argparse's sub-parsers action (its class is private)


def emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


class CliError(Exception):
    """A failure a command reports in one line (as JSON under --json), with its documented exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR, reason: str = "error", status: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason  # a slug a script can branch on: not_running, timeout, insufficient_funds, …
        self.status = status  # the gRPC status name where a service refused (UNAVAILABLE, INVALID_ARGUMENT, …)


def home_of(args: argparse.Namespace) -> Path | None:
    """`--home` after the command, else before it (`avadios --home X status`), else None (env or default)."""
    home: Path | None = getattr(args, "home", None) or getattr(args, "global_home", None)
    return home


def config_of(args: argparse.Namespace, **extra: Any) -> NodeConfig:
    """The config of the home a command names (`--home`, else $AVADIOS_HOME or ~/.avadios)."""
    return load_config({"home": home_of(args), **extra})


def start_hint(home: Path) -> str:
    return f"start it with `avadios up --home {home}`"


def require_node(config: NodeConfig) -> dict[str, Any]:
    """The running node's state file, or the CliError that says none runs for this home and how to start one."""
    state = read_node_file(config)
    if state is None:
        raise CliError(f"no node running at {config.home}: {start_hint(config.home)}", EXIT_NOT_RUNNING, "not_running")
    return state


def report_failure(args: argparse.Namespace, failure: CliError) -> int:
    """Print a failure for people (stderr) or scripts (JSON on stdout); returns its exit status."""
    if getattr(args, "json", False):
        error = {"message": failure.message, "reason": failure.reason, "exit_code": failure.code}
        emit_json({"error": {**error, "code": failure.status} if failure.status else error})
    else:
        console.print(f"[red]error:[/] {escape(failure.message)}")
    return failure.code


def node_client(config: NodeConfig, timeout: float = 10.0) -> tuple[httpx.Client, str]:
    """An HTTP client for the running node's API (with the home's API key when it has one), and its base URL."""
    state = read_node_file(config)
    base = state["api_url"] if state else config.api_url
    headers = {}
    key_file = config.home / identity.API_KEY_FILE
    if key_file.exists():
        headers["Authorization"] = f"Bearer {key_file.read_text().strip()}"
    limits = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S)
    return httpx.Client(base_url=base, headers=headers, timeout=limits), base


def not_running(config: NodeConfig, as_json: bool) -> int:
    """Report that no node runs for this home; returns the exit status for it."""
    if as_json:
        emit_json({"running": False, "home": str(config.home)})
    else:
        console.print(
            f"[red]no node is running[/] for home {config.home}: start one with "
            f"[bold]avadios up --home {config.home}[/]"
        )
    return EXIT_NOT_RUNNING


def add_command(
    commands: Commands,
    name: str,
    handler: Callable[[argparse.Namespace], int],
    help_: str,
    json_flag: bool = False,
) -> argparse.ArgumentParser:
    """Add a sub-command that takes --home (and --json where a script would want it)."""
    p: argparse.ArgumentParser = commands.add_parser(name, help=help_, description=help_)
    p.add_argument("--home", type=Path, default=None, help="node home directory (default $AVADIOS_HOME or ~/.avadios)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    p.set_defaults(handler=handler)
    return p
