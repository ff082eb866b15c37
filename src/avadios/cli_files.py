"""The files commands: `avadios files put/get/ls/rm/check` and `avadios hosting`, through the node's HTTP API.

A put streams the file to the API (never read whole) with a progress bar; a get streams it back into a hidden
`.NAME.part` beside the target and renames it only once every byte arrived, so an error leaves no plaintext.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import quote, unquote

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

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


def _client(args: argparse.Namespace, timeout: float = 600.0) -> httpx.Client:
    """The running node's API (the CLI's main says how to start one when there is none)."""
    config = config_of(args)
    require_node(config)
    client, _ = node_client(config, timeout=timeout)
    return client


def _fail(args: argparse.Namespace, reply: httpx.Response) -> int:
    try:
        body = reply.json()
        message = body["error"]["message"]
    except (ValueError, KeyError, TypeError):
        body, message = {"error": {"message": reply.text}}, reply.text
    if args.json:
        emit_json(body)
    else:
        console.print(f"[red]error {reply.status_code}:[/] {message}")
    return 1


def _progress(args: argparse.Namespace) -> Progress:
    return Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=console, disable=args.json,
    )  # fmt: skip


class _Counting:
    """A file that tells the progress bar how much the upload has read."""

    def __init__(self, f: BinaryIO, advance: Any) -> None:
        self.f, self.advance = f, advance

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell: httpx sizes the upload without reading it
        return getattr(self.f, name)


def cmd_put(args: argparse.Namespace, client: httpx.Client) -> int:
    path = Path(args.path)
    if not path.is_file():
        console.print(f"[red]error:[/] {path} is not a file")
        return EXIT_USAGE
    form = {"k": str(args.k or 0), "n": str(args.n or 0), "local_only": "true" if args.local_only else "false"}
    with _progress(args) as bar, path.open("rb") as f:
        task = bar.add_task(f"put {path.name}", total=path.stat().st_size)
        body = cast(BinaryIO, _Counting(f, lambda n: bar.advance(task, n)))
        reply = client.post("/api/files", files={"file": (path.name, body, "application/octet-stream")}, data=form)
    if reply.status_code != 200:
        return _fail(args, reply)
    info = reply.json()
    if args.json:
        emit_json(info)
    else:
        console.print(f"stored {info['name']}: {info['size']} bytes, {info['segments']} segments × {info['n']} shards "
                      f"(any {info['k']} rebuild each) on {info['hosters']} hosters")  # fmt: skip
        print(info["cap"])  # stdout: the capability alone, for scripts and copy-paste
    return 0


def cmd_get(args: argparse.Namespace, client: httpx.Client) -> int:
    with client.stream("GET", f"/api/files/{quote(args.cap, safe=':')}") as reply:
        if reply.status_code != 200:
            reply.read()
            return _fail(args, reply)
        name = unquote(reply.headers.get("content-disposition", "").partition("''")[2]) or "file"
        target = Path(args.output) if args.output else Path(os.path.basename(name))
        if target.is_dir():
            target = target / os.path.basename(name)
        tmp = target.with_name(f".{target.name}.part")
        size = int(reply.headers.get("content-length", "0"))
        written = 0
        try:
            with _progress(args) as bar, tmp.open("wb") as out:
                task = bar.add_task(f"get {target.name}", total=size)
                for chunk in reply.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
                    bar.advance(task, len(chunk))
            if written != size:
                raise OSError(f"the node sent {written} of {size} bytes")
            tmp.replace(target)
        except (OSError, httpx.HTTPError) as exc:
            console.print(f"[red]error:[/] {exc}; nothing was written")
            return 1
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    if args.json:
        emit_json({"path": str(target), "name": name, "size": written})
    else:
        console.print(f"wrote {target} ({written} bytes, every segment checked)")
    return 0


def cmd_ls(args: argparse.Namespace, client: httpx.Client) -> int:
    reply = client.get("/api/files")
    if reply.status_code != 200:
        return _fail(args, reply)
    files = reply.json()["files"]
    if args.json:
        emit_json({"files": files})
        return 0
    table = Table("name", "size", "k/n", "shards", "hosters alive", "health", "cap")
    for f in files:
        color = {"healthy": "green", "degraded": "yellow"}.get(f["health"], "red")
        table.add_row(f["name"], str(f["size"]), f"{f['k']}/{f['n']}", str(f["shards"]),
                      f"{f['hosters_alive']}/{f['hosters']}", f"[{color}]{f['health']}[/]", f["cap"])  # fmt: skip
    console.print(table)
    return 0


def cmd_rm(args: argparse.Namespace, client: httpx.Client) -> int:
    reply = client.delete(f"/api/files/{quote(args.cap, safe=':')}")
    if reply.status_code != 200:
        return _fail(args, reply)
    body = reply.json()
    if args.json:
        emit_json(body)
    else:
        console.print(f"removed: {body['shards_deleted']} shards deleted from their hosters")
    return 0


def cmd_check(args: argparse.Namespace, client: httpx.Client) -> int:
    with console.status("auditing every shard…", spinner="dots") if not args.json else contextlib.nullcontext():
        reply = client.get(f"/api/files/{quote(args.cap, safe=':')}/health")
    if reply.status_code != 200:
        return _fail(args, reply)
    body = reply.json()
    if args.json:
        emit_json(body)
        return 0
    console.print(f"{body['file']['name']}: [bold]{body['health']}[/]; healthy shards per segment "
                  f"{body['healthy_per_segment']}")  # fmt: skip
    table = Table("hoster", "shards", "passed", "failed", "unreachable", "last error")
    for h in body["hosters"]:
        table.add_row(h["node_id"][:16] + "…", str(h["shards"]), str(h["passed"]), str(h["failed"]),
                      str(h["unreachable"]), h["error"])  # fmt: skip
    console.print(table)
    return 0 if body["health"] != "unreadable" else 1


FILE_ACTIONS = {"put": cmd_put, "get": cmd_get, "ls": cmd_ls, "rm": cmd_rm, "check": cmd_check}


def cmd_files(args: argparse.Namespace) -> int:
    if args.action in ("put",) and not args.target:
        console.print("[red]error:[/] name the file: avadios files put PATH")
        return EXIT_USAGE
    if args.action in ("get", "rm", "check") and not args.target:
        console.print(f"[red]error:[/] give the capability: avadios files {args.action} avadios:file:…")
        return EXIT_USAGE
    args.path = args.cap = args.target
    with _client(args) as client:
        return FILE_ACTIONS[args.action](args, client)


def cmd_hosting(args: argparse.Namespace) -> int:
    with _client(args, timeout=30.0) as client:
        reply = client.get("/api/hosting")
    if reply.status_code != 200:
        return _fail(args, reply)
    body = reply.json()
    if args.json:
        emit_json(body)
        return 0
    table = Table("shards held", "bytes used", "quota", "price µAUTOM/GiB-month", "audits passed", "audits failed",
                  "shards served", "refused (quota / bad hash)")  # fmt: skip
    table.add_row(str(body["shards"]), str(body["used_bytes"]), str(body["quota_bytes"]),
                  str(body["price_per_gib_month"]), str(body["audits_passed"]), str(body["audits_failed"]),
                  str(body["shards_served"]), f"{body['refused_over_quota']} / {body['refused_bad_hash']}")  # fmt: skip
    console.print(table)
    return 0


def register(commands: Commands) -> None:
    files = add_command(
        commands, "files", cmd_files, "store files encrypted and sharded over hosters; read them back", True
    )
    files.add_argument(
        "action", choices=list(FILE_ACTIONS), help="put PATH | get CAP [-o PATH] | ls | rm CAP | check CAP"
    )
    files.add_argument("target", nargs="?", help="put: the file; get/rm/check: its capability (avadios:file:…)")
    files.add_argument("-o", "--output", default=None, help="get: where to write (default: the file's own name here)")
    files.add_argument("--k", type=int, default=0, help="put: shards any segment is rebuilt from (default storage_k)")
    files.add_argument("--n", type=int, default=0, help="put: shards per segment (default storage_n)")
    files.add_argument("--local-only", action="store_true", help="put: keep every shard on this node")
    add_command(commands, "hosting", cmd_hosting, "this node as a hoster: shards held, bytes used, audits", True)
