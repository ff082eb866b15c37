"""Multiaddrs as AVADIOS uses them: /ip4/H/tcp/P (P2P), /ip4/H/udp/P (DHT), optionally /p2p/<node id>."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_NODE_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Multiaddr:
    host: str
    port: int
    transport: str = "tcp"  # "tcp" (P2P gRPC) or "udp" (DHT)
    node_id: str = ""  # pinned identity, empty when not given

    def __str__(self) -> str:
        family = "ip6" if ":" in self.host else "ip4"
        text = f"/{family}/{self.host}/{self.transport}/{self.port}"
        return text + (f"/p2p/{self.node_id}" if self.node_id else "")

    def with_node_id(self, node_id: str) -> Multiaddr:
        return Multiaddr(self.host, self.port, self.transport, node_id)

    @property
    def address(self) -> str:
        """The address without the pinned identity."""
        return str(Multiaddr(self.host, self.port, self.transport))


def parse(text: str) -> Multiaddr:
    """Parse a multiaddr, or raise ValueError saying what is wrong with it."""
    parts = text.strip().split("/")
    if len(parts) < 5 or parts[0] != "":
        raise ValueError(f"bad multiaddr {text!r}: expected /ip4/HOST/tcp/PORT[/p2p/NODE_ID]")
    family, host, transport, port_text = parts[1:5]
    if family not in ("ip4", "ip6"):
        raise ValueError(f"bad multiaddr {text!r}: only /ip4 and /ip6 addresses are supported, not /{family}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad multiaddr {text!r}: {host!r} is not an IP address") from None
    if (ip.version == 4) != (family == "ip4"):
        raise ValueError(f"bad multiaddr {text!r}: {host} is not an /{family} address")
    if transport not in ("tcp", "udp"):
        raise ValueError(f"bad multiaddr {text!r}: transport must be tcp or udp, not {transport!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad multiaddr {text!r}: {port_text!r} is not a port (1-65535)")
    node_id = ""
    rest = parts[5:]
    if rest:
        if len(rest) != 2 or rest[0] != "p2p" or not _NODE_ID.match(rest[1]):
            raise ValueError(f"bad multiaddr {text!r}: only /p2p/<node id: 64 hex digits> may follow the port")
        node_id = rest[1]
    return Multiaddr(str(ip), int(port_text), transport, node_id)


def parse_tcp(text: str) -> Multiaddr:
    """Parse a peer's P2P address (/ip4/H/tcp/P[/p2p/ID]), or raise ValueError saying what is wrong with it."""
    addr = parse(text)
    if addr.transport != "tcp":
        raise ValueError(f"{text} is not a P2P (tcp) address")
    return addr


def first_tcp(addresses: list[str] | tuple[str, ...], node_id: str) -> Multiaddr | None:
    """The first P2P address among a peer's advertised ones, pinned to `node_id`; None when it has none."""
    for text in addresses:
        try:
            addr = parse_tcp(text)
        except ValueError:
            continue
        return addr if addr.node_id else addr.with_node_id(node_id)
    return None
