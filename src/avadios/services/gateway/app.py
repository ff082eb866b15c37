"""The gateway's local HTTP API, assembled: the parts it serves from, and the FastAPI app over them.

One router per area (`api/openai.py`, `api/embeddings.py`, `api/audio.py`, `api/wallet.py`, `api/peers.py`,
`api/jobs.py`, `api/files.py`, `api/node.py`), one error handler (`api/errors.py`), one auth dependency
(`api/auth.py`) on every route but the probes' /health and /metrics and the dashboard's static files (`api/web.py`:
they hold no data), and one limit on request bodies (file and audio uploads have their own). Answers themselves
come from the tier pipeline (`pipeline.py`), which knows nothing of HTTP.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from avadios import __version__
from avadios.config import NodeConfig
from avadios.services.gateway.api.audio import FORM_OVERHEAD_BYTES, TRANSCRIPTIONS_ROUTE, audio_router
from avadios.services.gateway.api.auth import api_key_check
from avadios.services.gateway.api.embeddings import embeddings_router
from avadios.services.gateway.api.errors import BodyLimit, install_error_handler
from avadios.services.gateway.api.files import files_router
from avadios.services.gateway.api.jobs import jobs_router
from avadios.services.gateway.api.node import node_router
from avadios.services.gateway.api.openai import openai_router
from avadios.services.gateway.api.origin import SameOrigin
from avadios.services.gateway.api.peers import discovery_stub, peers_router
from avadios.services.gateway.api.wallet import wallet_router
from avadios.services.gateway.api.web import load_assets, web_router
from avadios.services.gateway.health import HealthBoard
from avadios.services.gateway.metrics import Metrics
from avadios.services.gateway.pipeline import Pipeline
from avadios.services.gateway.queue_metrics import QueueCollector
from avadios.transport import NatsChannel
from avadios.v1.jobs_nats import VerifierClient
from avadios.v1.storage_nats import StorageClient
from avadios.v1.voice_nats import VoiceClient


class Gateway:
    """What the HTTP API serves from: the node's config and id, its API key (None on loopback), the tier
    pipeline, the health board fed by heartbeats, the metrics, the NATS channel to the other services and a
    client of the discovery service (one for the whole gateway)."""

    def __init__(self, config: NodeConfig, channel: NatsChannel, node_id: str, api_key: str | None) -> None:
        self.config = config
        self.node_id = node_id
        self.api_key = api_key
        self.channel = channel
        self.pipeline = Pipeline.over(channel, config.request_timeout_s, config.default_max_tokens, config.network_tier)
        self.board = HealthBoard()
        self.metrics = Metrics()
        self.metrics.registry.register(QueueCollector(self.board))
        self.discovery = discovery_stub(channel)
        self.voice = VoiceClient(channel, default_timeout=config.request_timeout_s)


def build_app(gw: Gateway) -> FastAPI:
    app = FastAPI(title="AVADIOS node", version=__version__, docs_url="/docs", redoc_url=None)
    auth = api_key_check(gw.api_key)
    keyed = [Depends(auth)]
    app.include_router(openai_router(gw.pipeline, gw.metrics, gw.voice), dependencies=keyed)
    app.include_router(embeddings_router(gw.pipeline, gw.metrics), dependencies=keyed)
    app.include_router(audio_router(gw.voice, gw.metrics, gw.config.voice_max_audio_bytes), dependencies=keyed)
    app.include_router(wallet_router(gw.config.home, gw.channel), dependencies=keyed)
    app.include_router(peers_router(gw.discovery), dependencies=keyed)
    app.include_router(jobs_router(VerifierClient(gw.channel)), dependencies=keyed)
    app.include_router(files_router(StorageClient(gw.channel, default_timeout=60.0)), dependencies=keyed)
    app.include_router(node_router(gw.node_id, gw.board, gw.metrics))
    app.include_router(web_router(load_assets()))
    install_error_handler(app, gw.metrics)
    # Uploads have their own, larger limits: audio (the file's, plus the multipart form around it) and files.
    uploads = {
        TRANSCRIPTIONS_ROUTE: gw.config.voice_max_audio_bytes + FORM_OVERHEAD_BYTES,
        "/api/files": gw.config.max_upload_bytes,
    }
    app.add_middleware(BodyLimit, limit=gw.config.max_body_bytes, per_path=uploads)
    app.add_middleware(SameOrigin, loopback_only=gw.config.api_is_local)
    return app
