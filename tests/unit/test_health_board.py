"""GET /health's verdict from heartbeats: loading, ready, or gone quiet."""

from __future__ import annotations

import time

from avadios.services.gateway.health import STALE_AFTER_S, Beat, HealthBoard
from avadios.v1 import common_pb2

Status = common_pb2.HealthReply.Status


def beat(board: HealthBoard, status: int, replica: int = 0, age: float = 0.0) -> None:
    reply = common_pb2.HealthReply(
        status=status,  # type: ignore[arg-type]
        service="inference",
        instance=f"inference-{replica}-1",
        replica=replica,
    )
    board._beats[reply.instance] = Beat(reply, time.monotonic() - age)


def test_no_inference_heartbeat_means_unavailable() -> None:
    assert HealthBoard().summary()[0] == "unavailable"


def test_a_loading_model_is_reported_as_loading() -> None:
    board = HealthBoard()
    beat(board, Status.LOADING)
    state, services = board.summary()
    assert state == "loading" and services["inference"][0]["status"] == "loading"
    assert not board.inference_ready()


def test_one_serving_replica_makes_the_node_ready() -> None:
    board = HealthBoard()
    beat(board, Status.LOADING, replica=0)
    beat(board, Status.SERVING, replica=1)
    assert board.summary()[0] == "ok" and board.inference_ready()


def test_a_replica_that_went_quiet_no_longer_counts() -> None:
    board = HealthBoard()
    beat(board, Status.SERVING, age=STALE_AFTER_S + 1)
    assert board.summary()[0] == "unavailable"
