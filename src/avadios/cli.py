"""The `avadios` command: start a node, and talk to the node of a home from scripts or a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from avadios import __version__, cli_files, cli_network, cli_voice, cli_wallet, identity
from avadios.cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    CliError,
    Commands,
    add_command,
    config_of,
    console,
    emit_json,
    home_of,
    node_client,
    not_running,
    report_failure,
    require_node,
    start_hint,
)
from avadios.config import NodeConfig, default_home, parse_replicas, with_replicas
from avadios.devnet import DevnetError
from avadios.errors import AvadiosError, Unavailable
from avadios.ledger.amount import format_autom
from avadios.logs import JsonFormatter
from avadios.models import default_model_path
from avadios.supervisor import HomeInUse, PortInUse, Supervisor, read_node_file

READY_TIMEOUT_S = 300.0


# ---- up -----------------------------------------------------------------------------------------------


def _file_logging(config: NodeConfig) -> None:
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        config.logs_dir / "supervisor.log", maxBytes=config.log_max_bytes, backupCount=config.log_keep
    )
    handler.setFormatter(JsonFormatter({"service": "supervisor"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())


async def _wait_ready(
    config: NodeConfig, stopping: asyncio.Event, show: Callable[[str], None]
) -> dict[str, Any] | None:
    """Poll /health until the node is ready, showing which services serve so far and the time spent."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() - started < READY_TIMEOUT_S and not stopping.is_set():
            waited = f"{time.monotonic() - started:.0f} s"
            try:
                reply = await client.get(config.api_url + "/health")
                body: dict[str, Any] = reply.json()
                if reply.status_code == 200:
                    return body
                services = body.get("services", {})
                serving = sorted(n for n, group in services.items() if any(s["status"] == "serving" for s in group))
                waiting = sorted(set(services) - set(serving))
                ready = f"{len(serving)}/{len(services)} services serving"
                show(f"starting: {ready}, waiting for {', '.join(waiting)} ({waited})")
            except (httpx.HTTPError, ValueError, KeyError):
                show(f"starting services: waiting for the gateway's API ({waited})")
            await asyncio.sleep(0.2)
    return None


async def _run_node(config: NodeConfig, supervisor: Supervisor) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await supervisor.start()
    watcher = asyncio.create_task(supervisor.watch())
    with console.status("starting services and loading the model…") as status:
        health = await _wait_ready(config, stopping, status.update)
    if health is not None:
        models = sorted({m for s in health["services"].get("inference", []) for m in s.get("models", [])})
        console.print(f"[green]ready[/]: serving {', '.join(models)}. Ctrl-C stops the node.")
        console.print(f"dashboard: {config.api_url}/  ·  OpenAI base URL: {config.api_url}/v1")
    elif not stopping.is_set():
        console.print(f"[yellow]the node is not healthy yet[/]; see the logs in {config.logs_dir}")
    await stopping.wait()
    console.print("stopping…")
    supervisor.request_stop()
    await watcher
    await supervisor.stop()
    console.print("stopped.")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    try:
        bootstrap = tuple(args.bootstrap) if args.bootstrap else None
        config = config_of(
            args,
            api_host=args.api_host,
            api_port=args.api_port,
            nats_port=args.nats_port,
            p2p_port=args.p2p_port,
            bootstrap=bootstrap,
            inference_backend="openai" if args.backend else None,
            inference_backend_url=args.backend,
        )
        replicas: dict[str, int] = {}
        for spec in args.replicas or []:
            replicas.update(parse_replicas(spec))
        config = with_replicas(config, replicas)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    supervisor = Supervisor(config)
    try:
        supervisor.preflight()
        node = identity.load_or_create(config.home)
        if not config.api_is_local:
            identity.load_or_create_api_key(config.home)
    except (PortInUse, HomeInUse, identity.KeyPermissionError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    _file_logging(config)
    if config.inference_backend == "openai":  # tier 1 is the user's own server: no GGUF of ours to prepare
        model = f"{config.inference_backend_url} (inference_backend = openai)"
    else:
        with console.status("preparing the default model (first start assembles it from its package)…"):
            try:
                model = str(default_model_path(config))
            except Exception as exc:
                console.print(f"[red]error:[/] cannot prepare the default model: {exc}")
                return 1
    table = Table.grid(padding=(0, 2))
    table.add_row("node id", node.node_id)
    table.add_row("home", str(config.home))
    table.add_row("dashboard / API", config.api_url)
    table.add_row("OpenAI base URL", config.api_url + "/v1")
    table.add_row("NATS", config.effective_nats_url)
    table.add_row("P2P", f"/ip4/{config.advertised_host}/tcp/{config.p2p_port}/p2p/{node.node_id}")
    table.add_row("default model", model)
    table.add_row("logs", str(config.logs_dir))
    if not config.api_is_local:
        table.add_row("API key", str(config.home / identity.API_KEY_FILE))
    console.print(f"[bold]AVADIOS node[/] {__version__}")
    console.print(table)
    return asyncio.run(_run_node(config, supervisor))


# ---- status, id, models, ask ---------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    config = config_of(args)
    state = read_node_file(config)
    if state is None:
        return not_running(config, args.json)
    client, base = node_client(config)
    with client:
        try:
            reply = client.get("/health")
            health = reply.json()
        except httpx.HTTPError as exc:
            health = {"status": "unreachable", "error": str(exc), "services": {}}
    node_id = health.get("node_id") or identity.load(config.home).node_id
    result = {
        "running": True,
        "home": str(config.home),
        "node_id": node_id,
        "api_url": base,
        "health": health.get("status"),
        "processes": state["processes"],
        "services": health.get("services", {}),
    }
    if args.json:
        emit_json(result)
        return 0
    console.print(f"node [bold]{node_id}[/]  home {config.home}  API {base}  health [bold]{result['health']}[/]")
    table = Table("process", "pid", "restarts", "status", "detail")
    instances = {(s["service"], s.get("replica", 0)): s for group in result["services"].values() for s in group}
    for name, proc in state["processes"].items():
        service, _, replica = name.partition("-")
        inst = instances.get((service, int(replica or 0)), {})
        detail = inst.get("detail") or (f"model {inst['loaded_model']}" if inst.get("loaded_model") else "")
        if inst.get("requests_served"):
            detail += f" served {inst['requests_served']}"
        if queue := inst.get("queue"):
            detail += (
                f" slots {queue['running']}/{queue['slots']} queued {queue['waiting']}/{queue['limit']}"
                f" mean wait {queue['mean_wait_s']:.2f}s"
            )
            if queue["timeouts"] or queue["rejected"]:
                detail += f" refused {queue['timeouts']} (wait) {queue['rejected']} (full)"
        state = proc.get("state", "running")
        if state != "running":  # the supervisor knows better than a stale heartbeat: restarting, crash loop
            status, detail = state, proc.get("detail") or detail
        else:
            status = inst.get("status", "up")
        table.add_row(name, str(proc["pid"] or "-"), str(proc["restarts"]), status, detail.strip())
    console.print(table)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        node = identity.load_or_create(config.home)
    except identity.KeyPermissionError as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE
    if args.json:
        emit_json({"node_id": node.node_id, "public_key": node.public_key.hex(), "home": str(config.home)})
    else:
        print(node.node_id)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    config = config_of(args)
    require_node(config)
    client, _ = node_client(config)
    with client:
        reply = client.get("/v1/models")
    if reply.status_code != 200:
        console.print(f"[red]error:[/] {reply.json()['error']['message']}")
        return 1
    data = reply.json()["data"]
    if args.json:
        emit_json(data)
        return 0
    table = Table("model", "kind", "default", "size", "context", "chat format")
    for m in data:
        info = m["avadios"]
        if "kind" in info:  # a voice model: transcription or speech (OpenAI's names say which model they mean)
            kind = info["kind"] + (f" = {info['means']}" if info["means"] else "")
            table.add_row(m["id"], kind, "yes" if info["default"] else "", "", "", "")
            continue
        table.add_row(
            m["id"],
            "text",
            "yes" if info["default"] else "",
            f"{info['size_bytes'] / 1e6:.0f} MB",
            str(info["context_length"]),
            info["chat_format"],
        )
    console.print(table)
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    config = config_of(args)
    require_node(config)
    body: dict[str, Any] = {
        "model": args.model or "default",
        "messages": [{"role": "user", "content": args.prompt}],
        "stream": not args.json,
        "temperature": args.temperature,
    }
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens
    if args.network or args.replicas or args.max_price:
        body["avadios"] = {"tier": "network" if args.network else "auto", "replicas": args.replicas}
        if args.max_price:
            body["avadios"]["max_price"] = args.max_price
    client, _ = node_client(config, timeout=config.request_timeout_s)
    with client:
        if args.json:
            reply = client.post("/v1/chat/completions", json=body)
            data = reply.json()
            if reply.status_code == 200:
                data["tier"] = reply.headers.get("x-avadios-tier")
                for header in ("job", "cost", "verdict"):
                    if f"x-avadios-{header}" in reply.headers:
                        data[header] = reply.headers[f"x-avadios-{header}"]
            emit_json(data)
            return 0 if reply.status_code == 200 else 1
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                reply.read()
                console.print(f"[red]error {reply.status_code}:[/] {reply.json()['error']['message']}")
                return 1
            for line in reply.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    console.print(f"\n[red]error:[/] {event['error']['message']}")
                    return 1
                for choice in event["choices"]:
                    sys.stdout.write(choice["delta"].get("content", ""))
                    sys.stdout.flush()
            sys.stdout.write("\n")
            tier = reply.headers.get("x-avadios-tier")
            if tier == "network":
                cost = int(reply.headers.get("x-avadios-cost", "0"))
                console.print(
                    f"[dim](network: {reply.headers.get('x-avadios-verdict')}, paid {format_autom(cost)} AUTOM, "
                    f"job {reply.headers.get('x-avadios-job')})[/]"
                )
            else:
                console.print(f"[dim](tier {tier})[/]")
    return 0


# ---- parser -------------------------------------------------------------------------------------------


def register_node_commands(commands: Commands) -> None:
    up = add_command(commands, "up", cmd_up, "start a node in the foreground (Ctrl-C stops every process it started)")
    up.add_argument(
        "--api-host",
        default=None,
        help="address of the HTTP API (default 127.0.0.1; env AVADIOS_API_HOST); other than loopback needs the API key",
    )
    up.add_argument("--api-port", type=int, default=None, help="HTTP API port (default 8740; env AVADIOS_API_PORT)")
    up.add_argument(
        "--nats-port", type=int, default=None, help="embedded NATS port (default 4222; env AVADIOS_NATS_PORT)"
    )
    up.add_argument("--p2p-port", type=int, default=None, help="P2P gRPC port (default 4001; env AVADIOS_P2P_PORT)")
    up.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="join the network through this peer, e.g. /ip4/127.0.0.1/tcp/4001[/p2p/NODE_ID] (repeatable)",
    )
    up.add_argument(
        "--replicas",
        action="append",
        metavar="SERVICE=N",
        help="processes of a service, e.g. inference=2 or voice=2 (repeatable)",
    )
    up.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="tier 1 from an OpenAI-compatible server you already run, e.g. http://127.0.0.1:11434/v1 (Ollama) "
        'instead of a local GGUF (config inference_backend = "openai" and inference_backend_url)',
    )
    add_command(commands, "status", cmd_status, "show the node's processes, replicas, health and model", json_flag=True)
    add_command(commands, "id", cmd_id, "print this node's id (BLAKE3 of its Ed25519 public key)", json_flag=True)
    add_command(commands, "models", cmd_models, "list the models the running node serves", json_flag=True)
    ask = add_command(commands, "ask", cmd_ask, "ask the running node a question and stream its answer", json_flag=True)
    ask.add_argument("prompt", help="the question")
    ask.add_argument("--model", default=None, help="model name (default: the node's default model)")
    ask.add_argument("--max-tokens", type=int, default=None, help="limit the answer's length in tokens")
    ask.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    ask.add_argument(
        "--network", action="store_true", help="ask the network (paid, verified by N providers) even for a local model"
    )
    ask.add_argument("--replicas", type=int, default=None, help="network: providers asked (default network_replicas)")
    ask.add_argument("--max-price", default=None, metavar="AUTOM", help='network: the most it may cost, e.g. "0.05"')


# Each command group registers its sub-commands here; later groups (network, wallet, …) add a line.
COMMAND_GROUPS: list[Callable[[Commands], None]] = [
    register_node_commands,
    cli_network.register,
    cli_wallet.register,
    cli_files.register,
    cli_voice.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avadios", description="Run and drive an AVADIOS node.", epilog=EXIT_STATUS_HELP
    )
    parser.add_argument("--version", action="version", version=f"avadios {__version__}")
    # Also accepted before the command (`avadios --home X status`); the command's own --home wins.
    parser.add_argument(
        "--home",
        dest="global_home",
        type=Path,
        default=None,
        help="node home directory (default $AVADIOS_HOME or ~/.avadios)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Commands that talk to the node over NATS would otherwise print its connection warnings (e.g. "nats
    # disconnected" when they close); `up` sends its own logs to <home>/logs instead.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return report_failure(args, CliError("interrupted", EXIT_INTERRUPTED, "interrupted"))
    except Exception as exc:
        failure = failure_of(exc, args)
        if failure is None:
            raise  # a bug: its traceback is what a report needs
        code = report_failure(args, failure)
    return code


def failure_of(exc: Exception, args: argparse.Namespace) -> CliError | None:
    """What an exception means to the person who ran the command, with the exit status it gets; None for a bug."""
    home = home_of(args) or default_home()
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        url = exc.request.url.copy_with(path="/", query=None)
        return CliError(f"no node answers at {url} ({exc}): {start_hint(home)}", EXIT_NOT_RUNNING, "not_running")
    if isinstance(exc, httpx.TimeoutException):
        return CliError(f"the node did not answer {exc.request.url.path} in time: {exc}", EXIT_ERROR, "timeout")
    if isinstance(exc, httpx.HTTPError):
        return CliError(f"talking to the node failed: {exc}", EXIT_ERROR, "http")
    if isinstance(exc, Unavailable):
        message = f"{exc.message}: is the node running? {start_hint(home)}"
        return CliError(message, EXIT_NOT_RUNNING, "not_running", exc.code.name)
    if isinstance(exc, AvadiosError):
        return CliError(exc.message, EXIT_ERROR, exc.reason or exc.code.name.lower(), exc.code.name)
    if isinstance(exc, DevnetError):
        return CliError(str(exc), EXIT_ERROR, "devnet")
    if isinstance(exc, ValueError | PortInUse | HomeInUse | identity.KeyPermissionError):
        return CliError(str(exc), EXIT_USAGE, "usage")
    if isinstance(exc, OSError):
        return CliError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_ERROR, "os")
    return None


if __name__ == "__main__":
    sys.exit(main())
