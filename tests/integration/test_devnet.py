"""A 5-node devnet of real processes on 127.0.0.1: discovery, the loss of the bootstrap node, a late joiner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from avadios import devnet
from tests.helpers import cli_json, eventually

pytestmark = pytest.mark.slow
MODEL = devnet.MODEL_NAME
FAST = {"ping_interval_s": 1.0, "dht_rpc_timeout_s": 1.0, "dead_after_failures": 2}


def route(node: devnet.DevnetNode) -> dict[str, Any]:
    reply = httpx.get(f"{node.api_url}/api/route/{MODEL}", timeout=60)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def ranked_ids(node: devnet.DevnetNode) -> set[str]:
    return {c["node_id"] for c in route(node)["ranked"]}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[devnet.DevnetNode]]]:
    directory = tmp_path_factory.mktemp("devnet")
    sets = [f"--set={k}={v}" for k, v in FAST.items()]
    try:
        started = time.monotonic()
        status = cli_json("devnet", "up", "--nodes", "5", "--dir", str(directory), *sets)
        print(f"5-node devnet healthy in {time.monotonic() - started:.1f} s")
        assert [n["health"] for n in status["nodes"]] == ["ok"] * 5
        yield directory, devnet.load(directory)
    finally:
        devnet.down(directory)


def test_every_node_finds_every_model_provider(net) -> None:
    _, nodes = net
    everyone = {n.node_id for n in nodes}
    for node in nodes:
        others = everyone - {node.node_id}

        def sees_all(node: devnet.DevnetNode = node, others: set[str] = others) -> bool:
            return ranked_ids(node) == others

        eventually(sees_all, timeout=45, what=f"node-{node.index} sees all")
    peers = cli_json("peers", "--home", nodes[2].home)
    assert {p["node_id"] for p in peers["peers"]} == everyone - {nodes[2].node_id}
    assert all(MODEL in p["models"] and p["price_micro_autom_per_1k"] == 100 for p in peers["peers"])
    assert httpx.get(nodes[2].api_url + "/api/peers", timeout=10).json()["node_id"] == peers["node_id"]


def test_a_node_that_only_knew_the_bootstrap_node_finds_the_others_after_it_is_killed(net) -> None:
    directory, nodes = net
    first, second = nodes[0], nodes[1]  # node-2 was bootstrapped from node-1 only
    peers = cli_json("peers", "--home", second.home)
    assert peers["bootstrap"] == [first.multiaddr]
    cli_json("devnet", "stop", "--dir", str(directory), "--node", "1", "--kill")
    survivors = {n.node_id for n in nodes[2:]}
    eventually(lambda: ranked_ids(second) == survivors, timeout=45, what="node-2 routes to nodes 3-5 without node-1")
    # The dead node is detected by failed pings and leaves the peer list.
    eventually(
        lambda: first.node_id not in {p["node_id"] for p in cli_json("peers", "--home", second.home)["peers"]},
        timeout=45,
        what="node-1 dropped from node-2's peers",
    )


def test_a_new_node_bootstraps_from_any_surviving_node(net) -> None:
    directory, nodes = net
    survivor = nodes[3]
    model = directory / f"{MODEL}.gguf"
    newcomer = devnet.create_node(directory, 6, model, [survivor.multiaddr], FAST)
    devnet.start(newcomer)
    try:
        devnet.wait_healthy([newcomer], timeout=90)
        survivors = {n.node_id for n in nodes[1:]}
        eventually(lambda: ranked_ids(newcomer) == survivors, timeout=45, what="the newcomer finds nodes 2-5")
        eventually(lambda: newcomer.node_id in ranked_ids(nodes[1]), timeout=45, what="node-2 finds the newcomer")
    finally:
        devnet.stop(newcomer)
