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

from avadios import identity
from avadios.config import NodeConfig, load_config
from avadios.supervisor import read_node_file

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

# Messages for people go to stderr, so stdout carries only what a command prints for scripts (--json).
console = Console(stderr=True)

Commands = Any  # argparse's sub-parsers action (its class is private)


def emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def config_of(args: argparse.Namespace, **extra: Any) -> NodeConfig:
    """The config of the home a command names (`--home`, else $AVADIOS_HOME or ~/.avadios)."""
    return load_config({"home": args.home, **extra})


def node_client(config: NodeConfig, timeout: float = 10.0) -> tuple[httpx.Client, str]:
    """An HTTP client for the running node's API (with the home's API key when it has one), and its base URL."""
    state = read_node_file(config)
    base = state["api_url"] if state else config.api_url
    headers = {}
    key_file = config.home / identity.API_KEY_FILE
    if key_file.exists():
        headers["Authorization"] = f"Bearer {key_file.read_text().strip()}"
    return httpx.Client(base_url=base, headers=headers, timeout=timeout), base


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
