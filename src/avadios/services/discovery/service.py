"""The Discovery servicer: runs the signed DHT, publishes this node's profile, watches peers, ranks providers.

It never opens a socket to a peer except the DHT's own UDP one: P2P calls (Hello to join through a TCP
multiaddr, pings for RTT and liveness) go through the gateway's Peering service over NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from nats.aio.msg import Msg

from avadios import __version__, identity
from avadios.errors import AvadiosError, InvalidArgument, NotFound, Unavailable
from avadios.ledger.wallet import payee_account
from avadios.multiaddr import Multiaddr, parse, parse_tcp
from avadios.records import (
    RecordRefused,
    profile_key,
    provider_key,
    sign_record,
    validate_record,
)
from avadios.runtime import HEARTBEAT_SUBJECT, ServiceContext
from avadios.services.discovery.dht import DhtNode
from avadios.services.discovery.peers import Peer, ReliabilityBook
from avadios.services.discovery.profile import ModelHashes, hardware
from avadios.services.discovery.routing import FORMULA, Observed, Weights, rank
from avadios.transport import NatsChannel, ServerContext
from avadios.v1 import common_pb2, discovery_pb2, discovery_pb2_grpc, inference_pb2, p2p_pb2, storage_pb2
from avadios.v1.inference_nats import InferenceClient
from avadios.v1.p2p_nats import PeerClient
from avadios.v1.storage_nats import StorageClient

STORAGE_OFFER_TRIES = 5
log = logging.getLogger("avadios.discovery")
Status = common_pb2.HealthReply.Status
STATE_FILE = "dht-state.pb"
BOOTSTRAP_FILE = "bootstrap.json"
THROUGHPUT_TOKENS = 16


class DiscoveryRoom(discovery_pb2_grpc.DiscoveryServicer):
    descriptor = discovery_pb2.DESCRIPTOR.services_by_name["Discovery"]

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.config = config = ctx.config
        self.identity = identity.load_or_create(config.home)
        self.node_id = self.identity.node_id
        self.dir = config.home / "discovery"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dht = DhtNode(
            self.identity,
            config.advertised_host,
            config.dht_port,
            rpc_timeout_s=config.dht_rpc_timeout_s,
            listen_host=config.p2p_host,
        )
        channel = NatsChannel(ctx.nc)
        self.inference = InferenceClient(channel)
        self.storage = StorageClient(channel)
        self.peering = PeerClient(channel, default_timeout=10)
        self.reliability = ReliabilityBook(self.dir / "reliability.json")
        self.hashes = ModelHashes(self.dir / "model-hashes.json")
        self.weights = Weights.of(config)
        self.peers: dict[str, Peer] = {}
        self.bootstrap: list[str] = self._load_bootstrap()
        self.joined: set[str] = set()  # bootstrap multiaddrs we joined through
        self.profile: discovery_pb2.CapabilityProfile | None = None
        self.profile_record: discovery_pb2.SignedRecord | None = None
        self._seq = 0
        self._throughput = 0.0
        self._loads: dict[str, tuple[float, float]] = {}  # inference instance -> (load, when)
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._error = ""

    @classmethod
    async def create(cls, ctx: ServiceContext) -> DiscoveryRoom:
        room = cls(ctx)
        await ctx.nc.subscribe(f"{HEARTBEAT_SUBJECT}.inference", cb=room._on_inference_beat)
        return room

    @property
    def servicer(self) -> object:
        return self

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        saved = self.dht.load(self.dir / STATE_FILE)
        for record in self.dht.own.values():
            self._seq = max(self._seq, record.seq)
        try:
            await self.dht.listen()
        except OSError as exc:
            self._error = f"cannot listen for the DHT on UDP {self.config.p2p_host}:{self.config.dht_port}: {exc}"
            log.error(self._error)
            return
        log.info("DHT listening", extra={"udp_port": self.dht.port, "saved_contacts": len(saved)})
        self._tasks = [
            asyncio.create_task(self._publish_loop()),
            asyncio.create_task(self._join_loop(saved)),
            asyncio.create_task(self._watch_loop()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.dht.protocol is not None:
            self._save()
        self.dht.stop()

    def _save(self) -> None:
        with contextlib.suppress(Exception):
            self.dht.save(self.dir / STATE_FILE)
            self.reliability.save()

    def health(self) -> common_pb2.HealthReply:
        if self._error:
            return self.ctx.base_health(Status.NOT_SERVING, self._error)
        if self.profile_record is None:
            return self.ctx.base_health(Status.LOADING, "publishing this node's profile")
        contacts = len(self.dht.contacts()) if self.dht.protocol is not None else 0
        detail = f"{len(self.peers)} peers, {contacts} DHT contacts, {len(self.dht.storage)} keys stored"
        return self.ctx.base_health(Status.SERVING, detail)

    # ---- this node's profile -----------------------------------------------------------------------------

    async def _on_inference_beat(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            beat = common_pb2.HealthReply.FromString(msg.data)
            # busy = every slot taken; a queue behind them counts as more than busy, up to the cap of 1
            self._loads[beat.instance] = (min(1.0, beat.in_flight / max(1, beat.slots)), time.time())

    def _load(self) -> float:
        now = time.time()
        live = [load for load, when in self._loads.values() if now - when < 5]
        return sum(live) / len(live) if live else 0.0

    def _next_seq(self) -> int:
        # Milliseconds since the epoch, never going back: survives restarts without a counter file.
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return self._seq

    async def _build_profile(self) -> discovery_pb2.CapabilityProfile:
        models = await self.inference.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
        offers = []
        for m in models.models:
            if not m.path:  # served by a forwarding backend: no GGUF to pin, no token ids to verify, not offered
                continue
            path = Path(m.path)
            digest = await asyncio.to_thread(self.hashes.digest, path)
            offers.append(
                discovery_pb2.ModelOffer(
                    name=m.name, quantization=m.quantization, blake3=digest, context_length=m.context_length
                )
            )
        host = self.config.advertised_host
        return discovery_pb2.CapabilityProfile(
            node_id=self.node_id,
            public_key=self.identity.public_key,
            addresses=[
                str(Multiaddr(host, self.config.p2p_port, "tcp", self.node_id)),
                str(Multiaddr(host, self.dht.port, "udp")),
            ],
            models=offers,
            hardware=hardware(),
            price_micro_autom_per_1k=self.config.price_micro_autom_per_1k,
            throughput_tokens_per_s=self._throughput,
            load=self._load(),
            software_version=__version__,
            published_unix=int(time.time()),
            # read at every publish: a wallet made while the node runs is paid from its next profile on
            payee=payee_account(self.config.home, self.identity.public_key),
            storage=await self._storage_offer(),
        )

    async def _storage_offer(self) -> discovery_pb2.StorageOffer | None:
        """The storage service's free space and price, asked at each publish (None while it is not running; at a
        node's start it may still be coming up, so it is given a few seconds rather than missing a whole TTL)."""
        for attempt in range(STORAGE_OFFER_TRIES):
            try:
                hosting = await self.storage.Hosting(storage_pb2.HostingRequest(), timeout=2.0)
                break
            except AvadiosError:
                if attempt == STORAGE_OFFER_TRIES - 1:
                    return None
                await asyncio.sleep(1.0)
        free = max(0, hosting.quota_bytes - hosting.used_bytes)
        return discovery_pb2.StorageOffer(free_bytes=free, price_per_gib_month=hosting.price_per_gib_month)

    async def publish(self) -> int:
        """Sign and store the profile and one provider entry per model; returns how many nodes took the profile."""
        profile = await self._build_profile()
        ttl = self.config.profile_ttl_s
        record = sign_record(
            self.identity, profile_key(self.node_id), profile.SerializeToString(), self._next_seq(), ttl
        )
        self.profile, self.profile_record = profile, record
        stored = await self.dht.put(record)
        for offer in profile.models:
            entry = discovery_pb2.ProviderEntry(
                node_id=self.node_id,
                model=offer.name,
                model_blake3=offer.blake3,
                price_micro_autom_per_1k=profile.price_micro_autom_per_1k,
            )
            seq = self._next_seq()
            await self.dht.put(
                sign_record(self.identity, provider_key(offer.name), entry.SerializeToString(), seq, ttl)
            )
        log.info("profile published", extra={"stored_on": stored, "models": [m.name for m in profile.models]})
        return stored

    async def _measure_throughput(self) -> None:
        request = inference_pb2.GenerateRequest(
            request_id="discovery-throughput",
            prompt="Count: one, two, three,",
            sampling=inference_pb2.SamplingParams(max_tokens=THROUGHPUT_TOKENS),
        )
        started, tokens = time.perf_counter(), 0
        async for chunk in self.inference.Generate(request, timeout=60):
            if chunk.finish_reason:
                tokens = chunk.usage.completion_tokens
        elapsed = time.perf_counter() - started
        if tokens:
            self._throughput = round(tokens / elapsed, 1)

    async def _publish_loop(self) -> None:
        delay = 0.2
        while self.profile_record is None:
            try:
                await self.publish()
            except AvadiosError as exc:  # inference still starting
                log.info("profile not published yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        with contextlib.suppress(AvadiosError):
            await self._measure_throughput()
            await self.publish()
        # While the network around a new node is still forming, nodes closer to our keys keep appearing and a
        # record stored on the first few neighbours can hide from lookups that stop at other nodes: re-publish
        # after 2, 4, 8, ... s until the interval reaches the normal refresh at half the TTL.
        early = 2.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(early, self.config.profile_ttl_s / 2))
            early *= 2
            self._wake.clear()
            try:
                await self.publish()
            except AvadiosError as exc:
                log.warning("profile refresh failed: %s", exc)

    # ---- joining -----------------------------------------------------------------------------------------

    def _load_bootstrap(self) -> list[str]:
        try:
            data = json.loads((self.dir / BOOTSTRAP_FILE).read_text())
            added, removed = list(data.get("added", [])), set(data.get("removed", []))
        except (FileNotFoundError, json.JSONDecodeError):
            added, removed = [], set()
        self._removed: set[str] = removed
        peers = [a for a in [*self.config.bootstrap, *added] if a not in removed]
        return list(dict.fromkeys(peers))

    def _save_bootstrap(self) -> None:
        added = [a for a in self.bootstrap if a not in self.config.bootstrap]
        data = {"added": added, "removed": sorted(self._removed)}
        (self.dir / BOOTSTRAP_FILE).write_text(json.dumps(data, indent=1))

    async def hello(self, multiaddr: str) -> Peer:
        """Dial a P2P multiaddr (through the gateway), check the profile it returns, join the DHT through it."""
        reply = await self.peering.Hello(p2p_pb2.PeerAddress(multiaddr=multiaddr), timeout=10)
        try:
            checked = validate_record(reply.profile)
        except RecordRefused as exc:
            raise InvalidArgument(f"peer at {multiaddr} sent an invalid profile: {exc}") from None
        if checked.owner_id != reply.node_id or checked.profile is None:
            raise InvalidArgument(f"peer at {multiaddr} sent a profile of another node")
        peer = self._peer(reply.node_id)
        peer.profile, peer.rtt_ms, peer.failures = checked.profile, reply.rtt_ms, 0
        self.reliability.observe(peer.node_id, True)
        udp = parse(peer.dht_address())
        await self.dht.bootstrap([(udp.host, udp.port)])
        return peer

    async def _join_loop(self, saved: list[tuple[str, int]]) -> None:
        if saved:
            with contextlib.suppress(Exception):
                await self.dht.bootstrap(saved)
        delay = 0.5
        while True:
            pending = [a for a in self.bootstrap if a not in self.joined]
            for addr in pending:
                try:
                    peer = await self.hello(addr)
                    peer.tags.add("bootstrap")
                    self.joined.add(addr)
                    log.info("joined through %s", addr, extra={"peer": peer.node_id[:16]})
                    self._wake.set()  # re-publish now that the DHT has neighbours
                except AvadiosError as exc:
                    log.info("cannot join through %s yet: %s", addr, exc)
            if not [a for a in self.bootstrap if a not in self.joined]:
                delay = 0.5
                await asyncio.sleep(self.config.ping_interval_s)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ---- watching peers ----------------------------------------------------------------------------------

    def _peer(self, node_id: str) -> Peer:
        peer = self.peers.get(node_id)
        if peer is None:
            peer = self.peers[node_id] = Peer(node_id)
        return peer

    async def _fetch_profile(self, node_id: str) -> discovery_pb2.CapabilityProfile | None:
        lookup = await self.dht.get(profile_key(node_id))
        for record in lookup.records:
            checked = validate_record(record)
            if checked.owner_id == node_id and checked.profile is not None:
                return checked.profile
        return None

    async def ping(self, peer: Peer) -> float | None:
        """Ping a peer through the gateway; update what we observed. Returns the RTT in ms, or None."""
        addr = peer.p2p_address()
        if not addr:
            return None
        try:
            reply = await self.peering.Ping(p2p_pb2.PeerAddress(multiaddr=addr), timeout=6)
        except AvadiosError as exc:
            peer.failures += 1
            self.reliability.observe(peer.node_id, False)
            log.info("ping failed", extra={"peer": peer.node_id[:16], "failures": peer.failures, "error": str(exc)})
            if peer.failures >= self.config.dead_after_failures:
                self.drop(peer.node_id)
            return None
        peer.rtt_ms, peer.load, peer.failures = reply.rtt_ms, reply.load, 0
        self.reliability.observe(peer.node_id, True)
        return reply.rtt_ms

    def drop(self, node_id: str) -> None:
        """A dead peer leaves the peer list and the DHT routing table (it comes back if it answers again)."""
        self.peers.pop(node_id, None)
        with contextlib.suppress(RuntimeError):
            self.dht.remove(node_id)
        log.info("dropped dead peer", extra={"peer": node_id[:16]})

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            try:
                await self.watch_once()
            except Exception:
                log.exception("peer watch failed")
            self._save()

    async def watch_once(self) -> None:
        for contact in self.dht.contacts():
            if contact.node_id not in self.peers or self.peers[contact.node_id].profile is None:
                profile = await self._fetch_profile(contact.node_id)
                if profile is not None:
                    self._peer(contact.node_id).profile = profile
        await asyncio.gather(*(self.ping(p) for p in list(self.peers.values()) if p.node_id != self.node_id))
        if len(self.dht.contacts()) == 0 and self.joined:
            self.joined.clear()  # everyone we knew is gone: try the bootstrap peers again

    # ---- the in-node API ---------------------------------------------------------------------------------

    async def Health(self, request: common_pb2.HealthRequest, context: ServerContext) -> common_pb2.HealthReply:
        return self.health()

    async def PublishProfile(
        self, request: discovery_pb2.PublishProfileRequest, context: ServerContext
    ) -> discovery_pb2.PublishProfileReply:
        stored = await self.publish()
        return discovery_pb2.PublishProfileReply(profile=self.profile_record, stored_on=stored)

    async def LocalProfile(
        self, request: discovery_pb2.LocalProfileRequest, context: ServerContext
    ) -> discovery_pb2.SignedRecord:
        if self.profile_record is None:
            raise Unavailable("this node has not published its profile yet")
        return self.profile_record

    async def find_providers(self, model: str) -> discovery_pb2.FindProvidersReply:
        lookup = await self.dht.get(provider_key(model))
        reply = discovery_pb2.FindProvidersReply(hops=lookup.hops)
        for record in lookup.records:
            entry = validate_record(record).provider
            if entry is None:
                continue
            if entry.node_id == self.node_id:
                profile = self.profile
            else:
                peer = self.peers.get(entry.node_id)
                profile = peer.profile if peer is not None and peer.profile is not None else None
                if profile is None:
                    profile = await self._fetch_profile(entry.node_id)
                    if profile is not None:
                        self._peer(entry.node_id).profile = profile
            reply.providers.append(discovery_pb2.Provider(entry=entry, profile=profile))
        return reply

    async def FindProviders(
        self, request: discovery_pb2.FindProvidersRequest, context: ServerContext
    ) -> discovery_pb2.FindProvidersReply:
        if not request.model:
            raise InvalidArgument("name a model")
        return await self.find_providers(request.model)

    async def ListPeers(
        self, request: discovery_pb2.ListPeersRequest, context: ServerContext
    ) -> discovery_pb2.ListPeersReply:
        reply = discovery_pb2.ListPeersReply(
            bootstrap=self.bootstrap,
            node_id=self.node_id,
            dht_address=str(Multiaddr(self.config.advertised_host, self.dht.port, "udp")),
        )
        for peer in sorted(self.peers.values(), key=lambda p: p.node_id):
            score = self.reliability.get(peer.node_id)
            profile = peer.profile or discovery_pb2.CapabilityProfile()
            reply.peers.append(
                discovery_pb2.PeerInfo(
                    node_id=peer.node_id,
                    addresses=profile.addresses,
                    rtt_ms=peer.rtt_ms,
                    reliability=score.value,
                    models=[m.name for m in profile.models],
                    price_micro_autom_per_1k=profile.price_micro_autom_per_1k,
                    last_seen_unix=score.last_seen_unix,
                    failures=peer.failures,
                    bootstrap="bootstrap" in peer.tags,
                    software_version=profile.software_version,
                    verified=score.verified,
                    rejected=score.rejected,
                    last_rejection=score.last_reason,
                    storage=profile.storage if profile.HasField("storage") else None,
                    payee=profile.payee,
                )
            )
        return reply

    async def AddBootstrap(
        self, request: discovery_pb2.AddBootstrapRequest, context: ServerContext
    ) -> discovery_pb2.BootstrapReply:
        try:
            addr = parse_tcp(request.multiaddr)
        except ValueError as exc:
            raise InvalidArgument(f"a bootstrap peer is a P2P (tcp) multiaddr: {exc}") from None
        peer = await self.hello(str(addr))
        peer.tags.add("bootstrap")
        pinned = str(addr.with_node_id(peer.node_id))
        self.bootstrap = [a for a in self.bootstrap if parse(a).address != addr.address] + [pinned]
        self._removed.discard(pinned)
        self.joined.add(pinned)
        self._save_bootstrap()
        self._wake.set()
        return discovery_pb2.BootstrapReply(bootstrap=self.bootstrap, node_id=peer.node_id)

    async def RemoveBootstrap(
        self, request: discovery_pb2.RemoveBootstrapRequest, context: ServerContext
    ) -> discovery_pb2.BootstrapReply:
        known = {a: self._bootstrap_id(a) for a in self.bootstrap}
        gone = [a for a, node_id in known.items() if node_id == request.node_id]
        if not gone:
            raise NotFound(f"{request.node_id} is not a bootstrap peer of this node")
        self.bootstrap = [a for a in self.bootstrap if a not in gone]
        self._removed.update(gone)
        self.peers.get(request.node_id, Peer("")).tags.discard("bootstrap")
        self._save_bootstrap()
        return discovery_pb2.BootstrapReply(bootstrap=self.bootstrap, node_id=request.node_id)

    def _bootstrap_id(self, multiaddr: str) -> str:
        addr = parse(multiaddr)
        if addr.node_id:
            return addr.node_id
        for peer in self.peers.values():  # learned from the handshake when the address pinned no id
            if peer.profile is not None and any(parse(a).address == addr.address for a in peer.profile.addresses):
                return peer.node_id
        return ""

    async def Route(self, request: discovery_pb2.RouteRequest, context: ServerContext) -> discovery_pb2.RouteReply:
        if not request.model:
            raise InvalidArgument("name a model")
        found = await self.find_providers(request.model)
        candidates = [p for p in found.providers if p.entry.node_id != self.node_id]

        async def observe(provider: discovery_pb2.Provider) -> Observed:
            peer = self._peer(provider.entry.node_id)
            if provider.profile.node_id:
                peer.profile = provider.profile
            rtt = await self.ping(peer)
            return Observed(
                node_id=peer.node_id,
                address=peer.p2p_address(),
                rtt_ms=rtt,
                reliability=self.reliability.get(peer.node_id).value,
                price=provider.profile.price_micro_autom_per_1k,
                load=provider.profile.load,
            )

        observed = await asyncio.gather(*(observe(p) for p in candidates))
        ranked, excluded = rank(list(observed), self.weights)
        by_id = {p.entry.node_id: p for p in candidates}
        for candidate in (*ranked, *excluded):
            provider = by_id[candidate.node_id]
            candidate.model_blake3 = provider.entry.model_blake3
            candidate.payee = provider.profile.payee
            candidate.verified_streak = self.reliability.get(candidate.node_id).streak
        return discovery_pb2.RouteReply(model=request.model, ranked=ranked, excluded=excluded, formula=FORMULA)

    async def RecordVerdicts(
        self, request: discovery_pb2.RecordVerdictsRequest, context: ServerContext
    ) -> discovery_pb2.RecordVerdictsReply:
        after = []
        for verdict in request.verdicts:
            score = self.reliability.verdict(verdict.node_id, verdict.accepted, verdict.reason)
            after.append(score.value)
            log.info(
                "verdict on a provider",
                extra={
                    "peer": verdict.node_id[:16],
                    "accepted": verdict.accepted,
                    "reason": verdict.reason,
                    "reliability": round(score.value, 3),
                },
            )
        self.reliability.save()
        return discovery_pb2.RecordVerdictsReply(reliability=after)
