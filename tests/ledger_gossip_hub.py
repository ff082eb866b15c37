"""An in-memory gossip hub: replicas in one process exchange blocks and votes through it, with switches to
take a replica offline or split the network. The P2P protocol plays this part between real nodes; this
one is for tests only."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from avadios.v1 import ledger_pb2

Gossiped: TypeAlias = ledger_pb2.LedgerGossip
Deliver = Callable[[Gossiped], None]


@dataclass(slots=True)
class _Member:
    name: str
    deliver: Deliver
    online: bool = True
    group: int = 0


@dataclass(slots=True)
class HubEndpoint:
    hub: InMemoryHub
    name: str

    def broadcast(self, item: Gossiped) -> None:
        self.hub.send(self.name, item)


@dataclass(slots=True)
class InMemoryHub:
    """Messages queue up and are delivered by `run()`, in order, so tests stay deterministic. A copy of each
    message is made per receiver: replicas never share a mutable protobuf."""

    members: dict[str, _Member] = field(default_factory=dict)
    queue: deque[tuple[str, str, bytes]] = field(default_factory=deque)
    delivered: int = 0

    def join(self, name: str, deliver: Deliver) -> HubEndpoint:
        self.members[name] = _Member(name, deliver)
        return HubEndpoint(self, name)

    def send(self, sender: str, item: Gossiped) -> None:
        if not self.members[sender].online:
            return
        data = item.SerializeToString()
        for name in self.members:
            if name != sender:
                self.queue.append((sender, name, data))

    def set_online(self, name: str, online: bool) -> None:
        self.members[name].online = online

    def partition(self, *groups: list[str]) -> None:
        for number, group in enumerate(groups):
            for name in group:
                self.members[name].group = number

    def heal(self) -> None:
        for member in self.members.values():
            member.group = 0

    def run(self, max_messages: int = 1_000_000) -> int:
        """Deliver until nothing is queued; messages to or from an offline or separated member are lost."""
        count = 0
        while self.queue and count < max_messages:
            sender, target, data = self.queue.popleft()
            source, member = self.members[sender], self.members[target]
            if not (source.online and member.online) or source.group != member.group:
                continue
            member.deliver(Gossiped.FromString(data))
            count += 1
        self.delivered += count
        return count
