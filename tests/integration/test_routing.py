"""Routing on real nodes: two providers that differ in price, RTT (injected delay) and reliability, and one
below the reliability floor; `avadios route` ranks them as the documented score says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from avadios import devnet
from avadios.services.discovery.routing import Observed, Weights, score
from avadios.testing.tiny_gguf import write_tiny_gguf
from tests.helpers import cli_json

pytestmark = pytest.mark.slow
MODEL = devnet.MODEL_NAME


def test_route_ranks_providers_by_the_documented_score(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / f"{MODEL}.gguf")
    base = {"dht_rpc_timeout_s": 1.0, "ping_interval_s": 600.0}
    # The observer pings only when asked to route, so its reliability scores move only by what we do here.
    observer = devnet.create_node(tmp_path, 1, model, [], {**base, "reliability_floor": 0.6})
    cheap_slow = devnet.create_node(
        tmp_path, 2, model, [observer.multiaddr], {**base, "price_micro_autom_per_1k": 50, "p2p_test_delay_ms": 100}
    )
    fast_dear = devnet.create_node(
        tmp_path, 3, model, [cheap_slow.multiaddr], {**base, "price_micro_autom_per_1k": 10_000}
    )
    flaky = devnet.create_node(tmp_path, 4, model, [fast_dear.multiaddr], {**base, "price_micro_autom_per_1k": 0})
    nodes = [observer, cheap_slow, fast_dear, flaky]
    # What the observer saw of these peers before (persisted observations, as after earlier runs).
    seen = {cheap_slow.node_id: 1.0, fast_dear.node_id: 0.62, flaky.node_id: 0.0}
    book = Path(observer.home) / "discovery" / "reliability.json"
    book.parent.mkdir(parents=True)
    # Liveness and verified work both as seen before: reliability is the lower of the two.
    book.write_text(json.dumps({k: {"ping": 1.0, "work": v, "ok": 10, "verified": 10} for k, v in seen.items()}))
    try:
        for node in nodes:
            devnet.start(node)
        devnet.wait_healthy(nodes)
        time.sleep(2.0)  # let the last joiners re-publish into the joined DHT
        providers = {cheap_slow.node_id, fast_dear.node_id, flaky.node_id}
        for _ in range(3):  # at most three pings per peer: the flaky one stays below the floor
            reply = cli_json("route", MODEL, "--home", observer.home)
            if {c["node_id"] for c in reply["ranked"] + reply["excluded"]} == providers:
                break
            time.sleep(2.0)
        else:
            pytest.fail(f"the observer did not find all three providers: {reply}")
    finally:
        for node in nodes:
            devnet.stop(node)

    ranked, excluded = reply["ranked"], reply["excluded"]
    assert [c["node_id"] for c in excluded] == [flaky.node_id]
    assert "below the floor" in excluded[0]["excluded"]
    # Cheaper and more reliable beats faster: the weights say so, with RTT measured, not assumed.
    assert [c["node_id"] for c in ranked] == [cheap_slow.node_id, fast_dear.node_id]
    by_id = {c["node_id"]: c for c in ranked}
    assert by_id[cheap_slow.node_id]["rtt_ms"] >= 100 > by_id[fast_dear.node_id]["rtt_ms"]
    weights = Weights(floor=0.6)
    for c in ranked:
        price = c["price_micro_autom_per_1k"]
        expected = score(Observed(c["node_id"], c["address"], c["rtt_ms"], c["reliability"], price, c["load"]), weights)
        assert c["score"] == pytest.approx(expected.score, abs=1e-3)
    assert ranked[0]["score"] > ranked[1]["score"]
