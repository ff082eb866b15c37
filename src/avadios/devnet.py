"""`avadios devnet`: N full nodes on 127.0.0.1, each with its own home, NATS, services and ports, started in
the background and bootstrapped in a chain (node i knows only node i-1 at first). State in DIR/devnet.json.

One ledger network: DIR/genesis.json names every node key as a representative of equal weight and funds every
node's wallet (made in its home) with 1,000 AUTOM (`--fund`); each home gets a copy, which its ledger loads."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from avadios import identity
from avadios.config import CONFIG_FILE, DEVNET_FAULTS, DEVNET_MARKER
from avadios.ledger.address import encode_address
from avadios.ledger.amount import Micro
from avadios.ledger.genesis import DEVNET_BALANCE, GENESIS_FILE, devnet_genesis, save_genesis
from avadios.ledger.wallet import Wallet, create_wallet, load_wallet, new_mnemonic, wallet_path
from avadios.supervisor import NODE_FILE

STATE_FILE = "devnet.json"
MODEL_NAME = "devnet-tiny"
LIAR_MODEL_NAME = "devnet-liar"  # a wrong-model liar's second model (another random tiny GGUF)
HEALTH_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0


class DevnetError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class DevnetNode:
    index: int
    home: str
    node_id: str
    api_port: int
    nats_port: int
    p2p_port: int
    dht_port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.node_id}"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """Ports free for both TCP and UDP right now, held open together so none is handed out twice.

    They are drawn below the kernel's ephemeral range: a port from `bind(0)` is an ephemeral one, and any
    outgoing connection made before the node starts may take it as its local port (seen: a devnet gateway
    failing to bind its API port)."""
    first, stop = 10_000, _ephemeral_range()[0]
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            port = random.randrange(first, stop)
            if port in ports or port in (avoid or set()):
                continue
            tcp = socket.socket()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                tcp.close()
                udp.close()
                continue
            held += [tcp, udp]
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def load(directory: Path) -> list[DevnetNode]:
    try:
        data = json.loads((directory / STATE_FILE).read_text())
    except FileNotFoundError:
        raise DevnetError(f"no devnet in {directory}: start one with `avadios devnet up --dir {directory}`") from None
    return [DevnetNode(**n) for n in data["nodes"]]


def _save(directory: Path, nodes: list[DevnetNode]) -> None:
    (directory / STATE_FILE).write_text(json.dumps({"nodes": [asdict(n) for n in nodes]}, indent=2))


def _child_env() -> dict[str, str]:
    # The node's config.toml decides; a stray AVADIOS_* in the caller's environment must not override it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVADIOS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def supervisor_pid(node: DevnetNode) -> int | None:
    try:
        state = json.loads((Path(node.home) / "run" / NODE_FILE).read_text())
        pid = int(state["pid"])
        os.kill(pid, 0)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError, ProcessLookupError):
        return None
    return pid


def create_node(
    directory: Path,
    index: int,
    model: Path,
    bootstrap: list[str],
    settings: dict[str, Any],
) -> DevnetNode:
    """Make a node home with its own ports and config.toml (not started)."""
    home = directory / f"node-{index}"
    home.mkdir(parents=True, exist_ok=True)
    # Ports the devnet's other nodes were given: free now only because those nodes have not started yet.
    api, nats, p2p, dht = free_ports(4, avoid=_ports_taken(directory, home))
    config = {
        "api_port": api,
        "nats_port": nats,
        "p2p_port": p2p,
        "dht_port": dht,
        "bootstrap": bootstrap,
        "default_model_path": str(model),
        "inference_threads": 1,
        "voice_threads": 1,  # N nodes share the machine's cores: one Whisper thread each, like inference
        "context_length": 512,
        **settings,
    }
    (home / CONFIG_FILE).write_text(tomli_w.dumps(config))
    (home / DEVNET_MARKER).write_text("this home belongs to an `avadios devnet`: its test knobs are allowed\n")
    if config.get("devnet_fault") == "wrong-model":
        from avadios.testing.tiny_gguf import write_tiny_gguf

        write_tiny_gguf(home / "models" / f"{LIAR_MODEL_NAME}.gguf", seed=7 + index)
    node_id = identity.load_or_create(home).node_id
    _wallet(home)
    if (directory / GENESIS_FILE).exists():  # a node added later joins the devnet's network (not a representative)
        (home / GENESIS_FILE).write_bytes((directory / GENESIS_FILE).read_bytes())
    return DevnetNode(index, str(home), node_id, api, nats, p2p, dht)


def _ports_taken(directory: Path, home: Path) -> set[int]:
    taken: set[int] = set()
    for config in directory.glob(f"node-*/{CONFIG_FILE}"):
        if config.parent == home:
            continue
        with contextlib.suppress(OSError, ValueError), config.open("rb") as f:
            values = tomllib.load(f)
            taken |= {int(values[k]) for k in ("api_port", "nats_port", "p2p_port", "dht_port") if k in values}
    return taken


def _wallet(home: Path) -> Wallet:
    # A devnet wallet's recovery phrase is not shown: the seed stays in the home (0600), which is all a devnet needs.
    return load_wallet(home) if wallet_path(home).exists() else create_wallet(home, new_mnemonic())


def write_genesis(directory: Path, nodes: list[DevnetNode], fund: Micro = DEVNET_BALANCE) -> None:
    """The devnet's one genesis: every node key a representative of weight 1, every node wallet funded with
    `fund`; written to DIR/genesis.json and copied into every home (where the ledger looks for it)."""
    keys = [identity.load_or_create(Path(n.home)).public_key for n in nodes]
    wallets = [_wallet(Path(n.home)).account for n in nodes]
    genesis = devnet_genesis(keys, wallets, balance=fund)
    save_genesis(genesis, directory / GENESIS_FILE)
    for node in nodes:
        save_genesis(genesis, Path(node.home) / GENESIS_FILE)


def wallet_address(node: DevnetNode) -> str:
    return encode_address(load_wallet(Path(node.home)).account)


def start(node: DevnetNode) -> int:
    """Start the node's `avadios up` in the background; returns its pid."""
    if supervisor_pid(node) is not None:
        raise DevnetError(f"node {node.index} is already running")
    log = (Path(node.home) / "devnet.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "avadios.cli", "up", "--home", node.home],
        env=_child_env(),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    return proc.pid


def health(node: DevnetNode, timeout: float = 2.0) -> dict[str, Any]:
    """{"status": ok|loading|unavailable|down, "discovery": serving|loading|…}"""
    try:
        reply = httpx.get(node.api_url + "/health", timeout=timeout)
        body = reply.json()
    except (httpx.HTTPError, ValueError):
        return {"status": "down", "discovery": "down"}
    discovery = body.get("services", {}).get("discovery") or [{"status": "down"}]
    return {"status": body.get("status", "unknown"), "discovery": discovery[0].get("status", "unknown")}


def healthy(node: DevnetNode) -> bool:
    h = health(node)
    return bool(h["status"] == "ok" and h["discovery"] == "serving")


def wait_healthy(nodes: list[DevnetNode], timeout: float = HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        pending = [n for n in pending if not healthy(n)]
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"node-{n.index}" for n in pending)
            raise DevnetError(f"{names} not healthy after {timeout:.0f} s; see the logs under each home")
        time.sleep(0.25)


def parse_liars(text: str, count: int) -> dict[int, str]:
    """ "random:1,wrong-model:1" -> which node lies how: the kinds, in the order given, go to the devnet's last
    nodes (of 5 nodes: node 4 random, node 5 wrong-model), so node 1, which a devnet bootstraps from, is honest."""
    kinds: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, number = part.partition(":")
        if kind not in DEVNET_FAULTS or not number.isdigit() or int(number) < 1:
            raise DevnetError(f"bad --liars {part!r}: expected KIND:N with KIND one of {', '.join(DEVNET_FAULTS)}")
        kinds += [kind] * int(number)
    if len(kinds) >= count:
        raise DevnetError(f"{len(kinds)} liars among {count} nodes: at least one node must be honest")
    first = count - len(kinds) + 1
    return {first + i: kind for i, kind in enumerate(kinds)}


def up(
    directory: Path,
    count: int,
    model: Path | None,
    settings: dict[str, Any],
    fund: Micro = DEVNET_BALANCE,
    liars: dict[int, str] | None = None,
) -> list[DevnetNode]:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STATE_FILE).exists() and any(supervisor_pid(n) for n in load(directory)):
        raise DevnetError(f"a devnet is already running in {directory}: `avadios devnet down --dir {directory}` first")
    if model is None:
        from avadios.testing.tiny_gguf import write_tiny_gguf

        model = directory / f"{MODEL_NAME}.gguf"
        if not model.exists():
            write_tiny_gguf(model)
    nodes: list[DevnetNode] = []
    for index in range(1, count + 1):
        bootstrap = [nodes[-1].multiaddr] if nodes else []
        fault = (liars or {}).get(index)
        node_settings = {**settings, "devnet_fault": fault} if fault else settings
        nodes.append(create_node(directory, index, model.resolve(), bootstrap, node_settings))
    write_genesis(directory, nodes, fund)
    _save(directory, nodes)
    for node in nodes:
        start(node)
    wait_healthy(nodes)
    return nodes


def node_of(directory: Path, index: int) -> DevnetNode:
    for node in load(directory):
        if node.index == index:
            return node
    raise DevnetError(f"no node {index} in the devnet in {directory}")


def stop(node: DevnetNode, kill: bool = False) -> None:
    """SIGTERM: the node stops its services in order. SIGKILL (`kill`): the node and every process it started
    die at once, as in a crash."""
    pid = supervisor_pid(node)
    if pid is None:
        return
    pids = [pid]
    if kill:
        with contextlib.suppress(Exception):
            state = json.loads((Path(node.home) / "run" / NODE_FILE).read_text())
            pids += [p["pid"] for p in state["processes"].values() if p.get("pid")]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    if kill:
        with contextlib.suppress(FileNotFoundError):
            (Path(node.home) / "run" / NODE_FILE).unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(Exception):  # a zombie of ours counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    return True


def _fault_of(node: DevnetNode) -> str:
    """How the node lies as a provider ("" for an honest one), from its config.toml."""
    with contextlib.suppress(OSError, ValueError), (Path(node.home) / CONFIG_FILE).open("rb") as f:
        return str(tomllib.load(f).get("devnet_fault", ""))
    return ""


def down(directory: Path) -> None:
    for node in load(directory):
        stop(node)


def status(directory: Path) -> list[dict[str, Any]]:
    out = []
    for node in load(directory):
        running = supervisor_pid(node) is not None
        h = health(node) if running else {"status": "stopped", "discovery": "stopped"}
        out.append(
            {
                "index": node.index,
                "home": node.home,
                "node_id": node.node_id,
                "api_url": node.api_url,
                "p2p": node.multiaddr,
                "wallet": wallet_address(node) if wallet_path(Path(node.home)).exists() else None,
                "dht": f"/ip4/127.0.0.1/udp/{node.dht_port}",
                "running": running,
                "fault": _fault_of(node),
                "health": h["status"],
                "discovery": h["discovery"],
            }
        )
    return out
