"""The network commands: `avadios peers`, `avadios route`, `avadios devnet`."""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.table import Table

from avadios import devnet
from avadios.cli_common import (
    EXIT_USAGE,
    Commands,
    add_command,
    config_of,
    console,
    emit_json,
    node_client,
    require_node,
)
from avadios.ledger.amount import format_autom, parse_autom
from avadios.ledger.errors import LedgerError


def _ago(unix: int) -> str:
    if not unix:
        return "never"
    seconds = max(0, int(time.time()) - unix)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Call the running node's HTTP API; (exit code, JSON body or None)."""
    config = config_of(args)
    require_node(config)
    client, _ = node_client(config, timeout=60.0)
    with client:
        reply = client.request(method, path, **kwargs)
    body = reply.json()
    if reply.status_code != 200:
        if args.json:
            emit_json(body)
        else:
            console.print(f"[red]error {reply.status_code}:[/] {body['error']['message']}")
        return 1, None
    return 0, body


# ---- peers ----------------------------------------------------------------------------------------------


def cmd_peers(args: argparse.Namespace) -> int:
    if args.action == "add":
        if not args.target:
            console.print("[red]error:[/] name the peer: avadios peers add /ip4/H/tcp/P[/p2p/NODE_ID]")
            return EXIT_USAGE
        code, body = _call(args, "POST", "/api/peers", json={"multiaddr": args.target})
    elif args.action == "remove":
        if not args.target:
            console.print("[red]error:[/] name the peer: avadios peers remove NODE_ID")
            return EXIT_USAGE
        code, body = _call(args, "DELETE", f"/api/peers/{args.target}")
    else:
        code, body = _call(args, "GET", "/api/peers")
    if body is None:
        return code
    if args.json:
        emit_json(body)
        return 0
    if args.action in ("add", "remove"):
        verb = "added" if args.action == "add" else "removed"
        console.print(f"{verb} bootstrap peer [bold]{body['node_id']}[/]")
        for addr in body["bootstrap"]:
            console.print(f"  {addr}")
        return 0
    console.print(f"node [bold]{body['node_id']}[/]  DHT {body['dht_address']}")
    table = Table("node id", "addresses", "RTT", "reliability", "models", "price /1k tok", "last seen")
    for p in body["peers"]:
        table.add_row(
            p["node_id"][:16] + ("…" if not p["bootstrap"] else "… (bootstrap)"),
            "\n".join(p["addresses"]),
            f"{p['rtt_ms']:.1f} ms" if p["rtt_ms"] else "-",
            f"{p['reliability']:.2f}",
            ", ".join(p["models"]),
            f"{p['price_micro_autom_per_1k']} µAUTOM",
            _ago(p["last_seen_unix"]),
        )
    console.print(table)
    return 0


# ---- route ----------------------------------------------------------------------------------------------


def cmd_route(args: argparse.Namespace) -> int:
    code, body = _call(args, "GET", f"/api/route/{args.model}")
    if body is None:
        return code
    if args.json:
        emit_json(body)
        return 0
    console.print(f"providers of [bold]{body['model']}[/], best first")
    console.print(f"[dim]{body['formula']}[/]")
    table = Table("#", "node id", "score", "RTT", "reliability", "price /1k tok", "load", "why")
    for i, c in enumerate(body["ranked"], 1):
        parts = c["parts"]
        why = (
            f"rtt {parts['rtt']:.3f} + rel {parts['reliability']:.3f} + price {parts['price']:.3f} "
            f"+ load {parts['load']:.3f}"
        )
        table.add_row(
            str(i),
            c["node_id"][:16] + "…",
            f"{c['score']:.3f}",
            f"{c['rtt_ms']:.1f} ms",
            f"{c['reliability']:.2f}",
            str(c["price_micro_autom_per_1k"]),
            f"{c['load']:.2f}",
            why,
        )
    for c in body["excluded"]:
        table.add_row("-", c["node_id"][:16] + "…", "", "", f"{c['reliability']:.2f}", "", "", c["excluded"])
    console.print(table)
    return 0


# ---- jobs -----------------------------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    code, body = _call(args, "GET", "/api/jobs", params={"limit": args.limit})
    if body is None:
        return code
    if args.json:
        emit_json(body)
        return 0
    table = Table("job", "model", "verdict", "paid", "providers: outcome (score) paid", "time", "blocks")
    for job in body["jobs"]:
        providers = "\n".join(
            f"{p['node_id'][:12]}… {p['outcome']}"
            + (f" ({p['score']:.3f})" if p["score"] else "")
            + (f" {format_autom(p['paid_micro'])}" if p["paid_micro"] else "")
            + (f": {p['reason'][:60]}" if p["reason"] else "")
            for p in job["providers"]
        )
        settle = job["settle"][:12] or (f"refund at {job['refund_at_unix_ms']}" if job["refund_at_unix_ms"] else "-")
        table.add_row(
            job["job_id"][:12] + "…",
            job["model"],
            job["verdict"][:60],
            format_autom(job["cost_micro"]),
            providers,
            f"{job['duration_ms'] / 1000:.1f} s",
            f"hold {job['hold'][:12]}\nsettle {settle}",
        )
    console.print(table)
    return 0


# ---- devnet ---------------------------------------------------------------------------------------------


def _settings(pairs: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE pairs, each VALUE read as a TOML value (1, 0.5, true, ["a"]), else as a string."""
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"bad --set {pair!r}: expected KEY=VALUE, e.g. ping_interval_s=1")
        try:
            settings[key.strip()] = tomllib.loads(f"value = {value}")["value"]
        except tomllib.TOMLDecodeError:
            settings[key.strip()] = value
    return settings


def cmd_devnet(args: argparse.Namespace) -> int:
    directory = Path(args.dir).expanduser().resolve()
    try:
        if args.action == "up":
            with console.status(f"starting {args.nodes} nodes in {directory}…"):
                model = Path(args.model) if args.model else None
                liars = devnet.parse_liars(args.liars or "", args.nodes)
                devnet.up(directory, args.nodes, model, _settings(args.set), parse_autom(args.fund), liars)
        elif args.action == "down":
            devnet.down(directory)
        elif args.action in ("stop", "start"):
            if args.node is None:
                console.print(f"[red]error:[/] devnet {args.action} needs --node I")
                return EXIT_USAGE
            node = devnet.node_of(directory, args.node)
            if args.action == "stop":
                devnet.stop(node, kill=args.kill)
            else:
                devnet.start(node)
                devnet.wait_healthy([node])
    except devnet.DevnetError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    except LedgerError as exc:
        console.print(f"[red]error:[/] {exc.message}")
        return EXIT_USAGE
    if args.action == "down":
        if args.json:
            emit_json({"stopped": str(directory)})
        return 0
    rows = devnet.status(directory)
    if args.json:
        emit_json({"dir": str(directory), "nodes": rows})
        return 0
    table = Table("node", "node id", "API", "P2P multiaddr", "wallet", "health", "lies", "home")
    for r in rows:
        health = r["health"] if r["health"] != "ok" else f"ok, discovery {r['discovery']}"
        wallet = (r["wallet"] or "-")[:20] + "…"
        table.add_row(
            str(r["index"]),
            r["node_id"][:16] + "…",
            r["api_url"],
            r["p2p"],
            wallet,
            health,
            r["fault"] or "-",
            r["home"],
        )
    console.print(table)
    return 0


def register(commands: Commands) -> None:
    peers = add_command(commands, "peers", cmd_peers, "list known peers, or add/remove a bootstrap peer", True)
    peers.add_argument("action", nargs="?", choices=["list", "add", "remove"], default="list")
    peers.add_argument("target", nargs="?", help="add: a multiaddr /ip4/H/tcp/P[/p2p/ID]; remove: a node id")
    route = add_command(commands, "route", cmd_route, "rank the providers of a model, and why", True)
    route.add_argument("model", help="model name")
    dev = add_command(
        commands, "devnet", cmd_devnet, "run N full nodes on 127.0.0.1 for development and tests", json_flag=True
    )
    dev.add_argument("action", choices=["up", "status", "stop", "start", "down"])
    dev.add_argument("--dir", required=True, help="devnet directory (node homes DIR/node-1 … DIR/node-N)")
    dev.add_argument("--nodes", type=int, default=3, help="up: how many nodes (default 3)")
    dev.add_argument("--node", type=int, default=None, help="stop/start: which node (1-based)")
    dev.add_argument("--kill", action="store_true", help="stop: SIGKILL the node and its processes (a crash)")
    dev.add_argument("--model", default=None, help="up: GGUF every node serves (default: a generated tiny model)")
    dev.add_argument(
        "--fund", default="1000", metavar="AUTOM", help="up: what the genesis gives every node's wallet (default 1000)"
    )
    dev.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="up: a config.toml setting for every node (repeatable)"
    )
    dev.add_argument(
        "--liars",
        default=None,
        metavar="KIND:N,…",
        help="up (test knob): the last nodes lie as providers, e.g. random:1,wrong-model:1 "
        "(kinds: random, wrong-model, truncated, copy, cached, fake-logprobs)",
    )
    jobs = add_command(
        commands, "jobs", cmd_jobs, "recent network requests: providers, scores, verdicts, payments", True
    )
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20, newest first)")
