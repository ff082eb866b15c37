"""The network part of the local HTTP API: peers (GET, POST, DELETE /api/peers) and routes (GET /api/route/M).

`avadios peers --json` and `avadios route --json` print exactly what these return; the dashboard reads the
same. Everything is asked of the discovery service over NATS.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from avadios.errors import AvadiosError, http_status
from avadios.transport import NatsChannel, Stub
from avadios.v1 import discovery_pb2
from services.gateway.app import ApiError, Gateway
from services.gateway.openai_schema import error_body

DISCOVERY_TIMEOUT_S = 30.0


def peers_json(reply: discovery_pb2.ListPeersReply) -> dict[str, Any]:
    return {
        "node_id": reply.node_id,
        "dht_address": reply.dht_address,
        "bootstrap": list(reply.bootstrap),
        "peers": [
            {
                "node_id": p.node_id,
                "addresses": list(p.addresses),
                "rtt_ms": round(p.rtt_ms, 3),
                "reliability": round(p.reliability, 4),
                "models": list(p.models),
                "price_micro_autom_per_1k": p.price_micro_autom_per_1k,
                "last_seen_unix": p.last_seen_unix,
                "failures": p.failures,
                "bootstrap": p.bootstrap,
                "software_version": p.software_version,
            }
            for p in reply.peers
        ],
    }


def _candidate(c: discovery_pb2.RouteCandidate) -> dict[str, Any]:
    return {
        "node_id": c.node_id,
        "address": c.address,
        "score": round(c.score, 6),
        "rtt_ms": round(c.rtt_ms, 3),
        "reliability": round(c.reliability, 4),
        "price_micro_autom_per_1k": c.price_micro_autom_per_1k,
        "load": round(c.load, 4),
        "parts": {
            "rtt": round(c.rtt_part, 6),
            "reliability": round(c.reliability_part, 6),
            "price": round(c.price_part, 6),
            "load": round(c.load_part, 6),
        },
        "excluded": c.excluded,
    }


def route_json(reply: discovery_pb2.RouteReply) -> dict[str, Any]:
    return {
        "model": reply.model,
        "formula": reply.formula,
        "ranked": [_candidate(c) for c in reply.ranked],
        "excluded": [_candidate(c) for c in reply.excluded],
    }


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


def add_peer_routes(app: FastAPI, gw: Gateway, channel: NatsChannel) -> None:
    discovery = Stub(
        channel,
        "discovery",
        discovery_pb2.DESCRIPTOR.services_by_name["Discovery"],
        default_timeout=DISCOVERY_TIMEOUT_S,
    )

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                gw.check_auth(request)
                return JSONResponse(await handler(request))
            except ApiError as exc:
                return JSONResponse(error_body(exc.message, exc.type, exc.code), status_code=exc.status)
            except AvadiosError as exc:
                status = http_status(exc.code)
                return JSONResponse(error_body(exc.message, "server_error", exc.code.name.lower()), status)

        return run

    async def list_peers(request: Request) -> dict[str, Any]:
        return peers_json(await discovery.ListPeers(discovery_pb2.ListPeersRequest()))

    async def add_peer(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            multiaddr = str(json.loads(body)["multiaddr"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, 'send {"multiaddr": "/ip4/H/tcp/P[/p2p/NODE_ID]"}') from None
        reply = await discovery.AddBootstrap(discovery_pb2.AddBootstrapRequest(multiaddr=multiaddr))
        return {"node_id": reply.node_id, "bootstrap": list(reply.bootstrap)}

    async def remove_peer(request: Request) -> dict[str, Any]:
        node_id = request.path_params["node_id"]
        reply = await discovery.RemoveBootstrap(discovery_pb2.RemoveBootstrapRequest(node_id=node_id))
        return {"node_id": reply.node_id, "bootstrap": list(reply.bootstrap)}

    async def route(request: Request) -> dict[str, Any]:
        return route_json(await discovery.Route(discovery_pb2.RouteRequest(model=request.path_params["model"])))

    app.add_api_route("/api/peers", guarded(list_peers), methods=["GET"])
    app.add_api_route("/api/peers", guarded(add_peer), methods=["POST"])
    app.add_api_route("/api/peers/{node_id}", guarded(remove_peer), methods=["DELETE"])
    app.add_api_route("/api/route/{model:path}", guarded(route), methods=["GET"])
