"""The Kademlia DHT with authentication: `kademlia`'s routing table and crawlers, our own wire protocol.

`kademlia` 2.2.3 trusts every peer: self-chosen ids, any STORE overwrites, pickle state. Here every RPC and
every reply carries the sender's signed NodeCredential (DHT id = BLAKE3 of its Ed25519 key, bound to the UDP
address it sends from); a contact enters the routing table only when its credential checks out. Every value
is a RecordSet of SignedRecords, validated on STORE and on every value a lookup returns; a record with a bad
signature, an older seq, a foreign owner or past its expiry is refused and never replaces a good one.
State is persisted as a DhtState protobuf, never pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import umsgpack
from google.protobuf.message import DecodeError
from kademlia.crawling import NodeSpiderCrawl, RPCFindResponse, ValueSpiderCrawl
from kademlia.node import Node
from kademlia.routing import RoutingTable
from rpcudp.protocol import RPCProtocol

from avadios.identity import Identity, node_id_for
from avadios.records import (
    MAX_PROVIDERS,
    RecordRefused,
    dht_id_for,
    dht_key,
    merge,
    sign_credential,
    validate_credential,
    validate_record,
)
from avadios.v1 import discovery_pb2

log = logging.getLogger("avadios.discovery.dht")
MAX_REPLY_BYTES = 7 * 1024  # one datagram on any sane path (kademlia's values must fit one datagram, about 8 KB)
CREDENTIAL_TTL_S = 3600.0
_CRED_CACHE = 4096


class RecordStore:
    """What this node stores for the network: per DHT key, the valid records (one per owner)."""

    def __init__(self) -> None:
        self._sets: dict[bytes, list[discovery_pb2.SignedRecord]] = {}
        self.stored_at: dict[bytes, float] = {}

    def put(self, dkey: bytes, records: list[discovery_pb2.SignedRecord]) -> tuple[bool, list[str]]:
        """Merge `records` into what the key holds; returns (anything accepted, reasons for refusals)."""
        refused: list[str] = []
        matching = []
        for record in records:
            if dht_key(record.key) != dkey:
                refused.append(f"record {record.key!r} does not belong under this DHT key")
            else:
                matching.append(record)
        before = self._sets.get(dkey, [])
        merged, more = merge(before, matching)
        refused += more
        changed = [r.SerializeToString() for r in merged] != [r.SerializeToString() for r in before]
        if merged:
            self._sets[dkey] = merged
            if changed:
                self.stored_at[dkey] = time.monotonic()
        return len(more) < len(matching), refused

    def records(self, dkey: bytes) -> list[discovery_pb2.SignedRecord]:
        now = time.time()
        live = [r for r in self._sets.get(dkey, []) if r.expires_unix > now]
        if live:
            self._sets[dkey] = live
        else:
            self._sets.pop(dkey, None)
        return live

    def get(self, dkey: bytes) -> bytes | None:
        """The key's records as one RecordSet that fits a datagram, or None."""
        records = self.records(dkey)
        if not records:
            return None
        out = discovery_pb2.RecordSet()
        for record in records:
            out.records.append(record)
            if out.ByteSize() > MAX_REPLY_BYTES:
                del out.records[-1]
                break
        return out.SerializeToString()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        for dkey in list(self._sets):
            value = self.get(dkey)
            if value is not None:
                yield dkey, value

    def all_records(self) -> list[discovery_pb2.SignedRecord]:
        return [r for dkey in list(self._sets) for r in self.records(dkey)]

    def __len__(self) -> int:
        return len(self._sets)


def _decode_set(value: Any) -> list[discovery_pb2.SignedRecord]:
    if not isinstance(value, bytes):
        raise RecordRefused("value is not a RecordSet")
    try:
        return list(discovery_pb2.RecordSet.FromString(value).records)
    except DecodeError:
        raise RecordRefused("value is not a RecordSet") from None


@dataclass(frozen=True, slots=True)
class Contact:
    node_id: str  # AVADIOS node id (BLAKE3 hex of the key)
    public_key: bytes
    host: str
    port: int


class SignedProtocol(RPCProtocol):  # type: ignore[misc]  # rpcudp has no type hints
    """Kademlia's four RPCs, each carrying the caller's credential and answered with ours."""

    RPCS = frozenset({"ping", "store", "find_node", "find_value"})

    def __init__(self, dht: DhtNode, wait_timeout: float) -> None:
        RPCProtocol.__init__(self, wait_timeout=wait_timeout)
        self.dht = dht
        self.source_node = dht.node
        self.storage = dht.storage
        self.router = RoutingTable(self, dht.ksize, dht.node)
        self.credentials: dict[bytes, discovery_pb2.NodeCredential] = {}  # DHT id -> credential, verified
        self._verified: dict[bytes, float] = {}  # credential bytes -> expiry: signature checks are cached
        self.refused: Counter[str] = Counter()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._welcomed: set[bytes] = set()

    def spawn(self, coro: Any) -> None:
        """Run a coroutine in the background, keeping a reference until it finishes."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the door ----------------------------------------------------------------------------------------

    def _refuse(self, reason: str, address: tuple[str, int]) -> None:
        self.refused[reason] += 1
        log.info("refused DHT message from %s:%s: %s", address[0], address[1], reason)

    def _credential(self, raw: Any, address: tuple[str, int]) -> discovery_pb2.NodeCredential:
        if not isinstance(raw, bytes):
            raise RecordRefused("missing node credential")
        expires = self._verified.get(raw)
        try:
            cred = discovery_pb2.NodeCredential.FromString(raw)
        except DecodeError:
            raise RecordRefused("malformed node credential") from None
        if expires is not None and expires > time.time():
            if (cred.host, cred.port) != (address[0], address[1]):
                raise RecordRefused(f"credential for {cred.host}:{cred.port} used from {address[0]}:{address[1]}")
            return cred
        validate_credential(cred, address)
        if len(self._verified) > _CRED_CACHE:
            self._verified.clear()
        self._verified[raw] = float(cred.expires_unix)
        return cred

    def _sender(self, address: tuple[str, int], raw: Any) -> Node:
        cred = self._credential(raw, address)
        node = Node(cred.dht_id, address[0], address[1])
        self.credentials[node.id] = cred
        self.welcome_if_new(node)
        return node

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.spawn(self._solve_datagram(data, addr))

    async def _solve_datagram(self, datagram: bytes, address: tuple[str, int]) -> None:
        # A peer's bytes never raise out of here: malformed datagrams are dropped and counted.
        try:
            if len(datagram) < 22:
                raise ValueError("datagram too small")
            msg_id = datagram[1:21]
            data = umsgpack.unpackb(datagram[21:])
        except Exception:
            self._refuse("malformed datagram", address)
            return
        if datagram[:1] == b"\x00":
            await self._accept_request(msg_id, data, address)
        elif datagram[:1] == b"\x01":
            with contextlib.suppress(asyncio.InvalidStateError):  # the caller gave up (cancelled) already
                self._accept_response(msg_id, data, address)

    async def _accept_request(self, msg_id: bytes, data: Any, address: tuple[str, int]) -> None:
        if not (isinstance(data, list) and len(data) == 2 and data[0] in self.RPCS and isinstance(data[1], list)):
            self._refuse("unknown or malformed RPC", address)
            return
        name, args = data
        try:
            node = self._sender(address, args[0] if args else None)
            response: Any = getattr(self, f"rpc_{name}")(node, *args[1:])
        except RecordRefused as exc:
            self._refuse(str(exc), address)
            response = {"error": str(exc)}
        except TypeError:
            self._refuse(f"wrong arguments for {name}", address)
            response = {"error": f"wrong arguments for {name}"}
        if isinstance(response, dict):
            response["cred"] = self.dht.credential_bytes()
        with contextlib.suppress(Exception):
            self.transport.sendto(b"\x01" + msg_id + umsgpack.packb(response), address)

    # ---- serving -----------------------------------------------------------------------------------------

    def rpc_ping(self, sender: Node) -> dict[str, Any]:
        return {}

    def rpc_store(self, sender: Node, dkey: Any, value: Any) -> dict[str, Any]:
        if not isinstance(dkey, bytes) or len(dkey) != 20:
            raise RecordRefused("malformed key")
        accepted, refused = self.storage.put(dkey, _decode_set(value))
        for reason in refused:
            self._refuse(reason, (sender.ip, sender.port))
        return {"ok": accepted, "refused": refused[:5]}

    def rpc_find_node(self, sender: Node, key: Any) -> dict[str, Any]:
        if not isinstance(key, bytes) or len(key) != 20:
            raise RecordRefused("malformed key")
        neighbors = self.router.find_neighbors(Node(key), exclude=sender)
        return {"nodes": [tuple(n) for n in neighbors]}

    def rpc_find_value(self, sender: Node, key: Any) -> dict[str, Any]:
        if not isinstance(key, bytes) or len(key) != 20:
            raise RecordRefused("malformed key")
        value = self.storage.get(key)
        if value is None:
            return self.rpc_find_node(sender, key)
        return {"value": value}

    # ---- calling (the crawlers use these) -----------------------------------------------------------------

    async def _call(self, address: tuple[str, int], expected: bytes | None, name: str, *args: Any) -> Any:
        """Call `name` on a peer; a reply counts only with a valid credential for that address (and id)."""
        try:
            result = await getattr(self, name)(address, self.dht.credential_bytes(), *args)
        except Exception as exc:  # rpcudp refuses requests over 8 KB
            log.warning("DHT %s to %s:%s not sent: %s", name, address[0], address[1], exc)
            return None
        if not result[0]:
            return None
        reply = result[1]
        try:
            if not isinstance(reply, dict):
                raise RecordRefused("malformed reply")
            cred = self._credential(reply.get("cred"), address)
            if expected is not None and cred.dht_id != expected:
                raise RecordRefused("replying node's id is not the one we asked")
        except RecordRefused as exc:
            self._refuse(str(exc), address)
            return None
        if "error" in reply:
            log.info("DHT %s refused by %s:%s: %s", name, address[0], address[1], reply["error"])
        self.credentials[cred.dht_id] = cred
        reply["_node"] = Node(cred.dht_id, address[0], address[1])
        return reply

    def _nodes_of(self, reply: dict[str, Any]) -> list[tuple[bytes, str, int]]:
        nodes = []
        for item in reply.get("nodes") or []:
            if (
                isinstance(item, list | tuple)
                and len(item) == 3
                and isinstance(item[0], bytes)
                and len(item[0]) == 20
                and isinstance(item[1], str)
                and isinstance(item[2], int)
            ):
                nodes.append((item[0], item[1], item[2]))
        return nodes[: self.dht.ksize]

    async def call_ping(self, node: Node) -> tuple[bool, Any]:
        reply = await self._call((node.ip, node.port), node.id, "ping")
        return self.handle_call_response((reply is not None, reply), node)

    async def call_find_node(self, node: Node, target: Node) -> tuple[bool, Any]:
        reply = await self._call((node.ip, node.port), node.id, "find_node", target.id)
        result = (True, self._nodes_of(reply)) if reply is not None else (False, None)
        return self.handle_call_response(result, node)

    async def call_find_value(self, node: Node, target: Node) -> tuple[bool, Any]:
        reply = await self._call((node.ip, node.port), node.id, "find_value", target.id)
        if reply is None:
            return self.handle_call_response((False, None), node)
        if "value" in reply:
            try:
                records = _decode_set(reply["value"])
            except RecordRefused as exc:
                self._refuse(str(exc), (node.ip, node.port))
                records = []
            good = []
            for record in records:
                try:
                    if dht_key(record.key) != target.id:
                        raise RecordRefused(f"record {record.key!r} returned for another key")
                    validate_record(record)
                    good.append(record)
                except RecordRefused as exc:
                    self._refuse(str(exc), (node.ip, node.port))
            if good:
                return self.handle_call_response((True, {"value": good}), node)
        return self.handle_call_response((True, self._nodes_of(reply)), node)

    async def call_store(self, node: Node, dkey: bytes, value: bytes) -> bool:
        reply = await self._call((node.ip, node.port), node.id, "store", dkey, value)
        self.handle_call_response((reply is not None, reply), node)
        return bool(reply and reply.get("ok"))

    # ---- routing table upkeep (as kademlia.protocol, section 2.5 of the paper) -----------------------------

    def get_refresh_ids(self) -> list[bytes]:
        """Random ids in buckets not looked up for an hour (defined here: rpcudp turns unknown names into RPCs)."""
        return [random.randint(*bucket.range).to_bytes(20, byteorder="big") for bucket in self.router.lonely_buckets()]

    def welcome_if_new(self, node: Node) -> None:
        if not self.router.is_new_node(node):
            return
        # kademlia pushes our keys to every node not in a bucket; a node that only made the replacement list
        # stays "new" and would get every key again on every message (a store storm between full tables).
        if node.id in self._welcomed:
            self.router.add_contact(node)
            return
        if len(self._welcomed) > _CRED_CACHE:
            self._welcomed.clear()
        self._welcomed.add(node.id)
        for dkey, value in self.storage:
            keynode = Node(dkey)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                self.spawn(self.call_store(node, dkey, value))
        self.router.add_contact(node)

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        if not result[0]:
            self.router.remove_contact(node)
            return result
        self.welcome_if_new(node)
        return result


class _NodeCrawl(NodeSpiderCrawl):  # type: ignore[misc]
    rounds = 0

    async def _find(self, rpcmethod: Callable[..., Any]) -> Any:
        self.rounds += 1
        return await super()._find(rpcmethod)


class _RecordCrawl(ValueSpiderCrawl):  # type: ignore[misc]
    """Like kademlia's value crawl, but merges the signed records of every responder instead of voting."""

    rounds = 0

    async def _find(self, rpcmethod: Callable[..., Any]) -> Any:
        self.rounds += 1
        return await super()._find(rpcmethod)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> Any:
        toremove, found = [], []
        for peerid, raw in responses.items():
            response = RPCFindResponse(raw)
            if not response.happened():
                toremove.append(peerid)
            elif response.has_value():
                found.append(response.get_value())
            else:
                peer = self.nearest.get_node(peerid)
                if peer is not None:
                    self.nearest_without_value.push(peer)
                self.nearest.push(response.get_node_list())
        self.nearest.remove(toremove)
        if found:
            merged: list[discovery_pb2.SignedRecord] = []
            for records in found:
                merged, _ = merge(merged, records)
            peer = self.nearest_without_value.popleft()
            if peer:
                value = discovery_pb2.RecordSet(records=merged).SerializeToString()
                self.protocol.spawn(self.protocol.call_store(peer, self.node.id, value))
            return merged
        if self.nearest.have_contacted_all():
            return []
        return await self.find()


@dataclass(frozen=True, slots=True)
class Lookup:
    records: list[discovery_pb2.SignedRecord]
    hops: int


class DhtNode:
    """One DHT node: listens on UDP, bootstraps, stores and finds signed records."""

    def __init__(
        self,
        identity: Identity,
        host: str,
        port: int,
        ksize: int = 20,
        alpha: int = 3,
        rpc_timeout_s: float = 5.0,
        listen_host: str = "",
    ) -> None:
        self.identity = identity
        self.host, self.port = host, port  # what the credential advertises
        self.listen_host = listen_host or host
        self.ksize, self.alpha = ksize, alpha
        self.rpc_timeout_s = rpc_timeout_s
        self.node = Node(dht_id_for(identity.public_key))
        self.storage = RecordStore()
        self.own: dict[str, discovery_pb2.SignedRecord] = {}  # records this node publishes, by key
        self.protocol: SignedProtocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._cred: bytes = b""
        self._cred_renew = 0.0

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: SignedProtocol(self, self.rpc_timeout_s), local_addr=(self.listen_host, self.port)
        )
        self._transport = transport
        self.protocol = protocol
        if self.port == 0:
            self.port = transport.get_extra_info("sockname")[1]

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

    @property
    def proto(self) -> SignedProtocol:
        if self.protocol is None:
            raise RuntimeError("the DHT node is not listening")
        return self.protocol

    def credential_bytes(self) -> bytes:
        if time.time() > self._cred_renew:
            cred = sign_credential(self.identity, self.host, self.port, CREDENTIAL_TTL_S)
            self._cred = cred.SerializeToString()
            self._cred_renew = time.time() + CREDENTIAL_TTL_S / 2
        return self._cred

    # ---- the network -------------------------------------------------------------------------------------

    async def ping(self, address: tuple[str, int]) -> Node | None:
        """Ping an address; returns the verified node there (added to the routing table) or None."""
        reply = await self.proto._call(address, None, "ping")
        if reply is None:
            return None
        node: Node = reply["_node"]
        self.proto.welcome_if_new(node)
        return node

    async def bootstrap(self, addresses: list[tuple[str, int]]) -> int:
        """Join through the given UDP addresses; returns how many nodes the join crawl reached."""
        found = await asyncio.gather(*(self.ping(a) for a in addresses))
        nodes = [n for n in found if n is not None]
        nodes += [n for n in self.proto.router.find_neighbors(self.node, self.alpha) if n not in nodes]
        if not nodes:
            return 0
        crawl = _NodeCrawl(self.proto, self.node, nodes, self.ksize, self.alpha)
        return len(await crawl.find())

    async def refresh(self) -> None:
        """Refresh lonely buckets and re-store our own records (kademlia's hourly refresh, on our clock)."""
        for rid in self.proto.get_refresh_ids():
            crawl = _NodeCrawl(self.proto, Node(rid), self.proto.router.find_neighbors(Node(rid)), self.ksize, 3)
            await crawl.find()
        for record in list(self.own.values()):
            await self.put(record)

    async def put(self, record: discovery_pb2.SignedRecord) -> int:
        """Store a record on the k nodes closest to its key (and here when we are one of them)."""
        validate_record(record)
        dkey = dht_key(record.key)
        if record.owner_key == self.identity.public_key:
            self.own[record.key] = record
        target = Node(dkey)
        nearest = self.proto.router.find_neighbors(target)
        nodes: list[Node] = []
        if nearest:
            nodes = await _NodeCrawl(self.proto, target, nearest, self.ksize, self.alpha).find()
        if not nodes or self.node.distance_to(target) < max(n.distance_to(target) for n in nodes):
            self.storage.put(dkey, [record])
        value = discovery_pb2.RecordSet(records=[record]).SerializeToString()
        results = await asyncio.gather(*(self.proto.call_store(n, dkey, value) for n in nodes))
        return sum(results)

    async def get(self, key: str) -> Lookup:
        """All valid records under `key` that the network holds (merged, one per owner), and the hops taken."""
        dkey = dht_key(key)
        local = self.storage.records(dkey)
        target = Node(dkey)
        nearest = self.proto.router.find_neighbors(target)
        if not nearest:
            return Lookup(local, 0)
        crawl = _RecordCrawl(self.proto, target, nearest, self.ksize, self.alpha)
        found: list[discovery_pb2.SignedRecord] = await crawl.find()
        merged, _ = merge(local, found)
        return Lookup(merged[:MAX_PROVIDERS], crawl.rounds)

    # ---- the routing table -------------------------------------------------------------------------------

    def contacts(self) -> list[Contact]:
        out = []
        for bucket in self.proto.router.buckets:
            for node in bucket.get_nodes():
                cred = self.proto.credentials.get(node.id)
                if cred is not None:
                    out.append(Contact(node_id_for(cred.public_key), cred.public_key, node.ip, node.port))
        return out

    def remove(self, node_id: str) -> bool:
        """Drop a node (found dead by the caller) from the routing table."""
        for bucket in self.proto.router.buckets:
            for node in bucket.get_nodes():
                cred = self.proto.credentials.get(node.id)
                if cred is not None and node_id_for(cred.public_key) == node_id:
                    self.proto.router.remove_contact(node)
                    return True
        return False

    # ---- persistence (a protobuf of our own; never pickle) -------------------------------------------------

    def save(self, path: Path) -> None:
        state = discovery_pb2.DhtState(
            contacts=[
                c
                for bucket in self.proto.router.buckets
                for n in bucket.get_nodes()
                if (c := self.proto.credentials.get(n.id)) is not None
            ],
            records=self.storage.all_records(),
            own_records=list(self.own.values()),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state.SerializeToString())
        tmp.replace(path)

    def load(self, path: Path) -> list[tuple[str, int]]:
        """Restore stored records (each validated again) and return the saved contacts' addresses to re-ping:
        a saved contact enters the table again only when it answers with a valid credential."""
        try:
            state = discovery_pb2.DhtState.FromString(path.read_bytes())
        except (FileNotFoundError, DecodeError):
            return []
        for record in state.records:
            self.storage.put(dht_key(record.key), [record])
        for record in state.own_records:
            with contextlib.suppress(RecordRefused):
                validate_record(record)
                self.own[record.key] = record
        return [(c.host, c.port) for c in state.contacts]
