"""The genesis: a network's initial balances and representatives, as a JSON file any node can load.

    {
      "format": "avadios-genesis-v1",
      "name": "devnet-3",
      "balances": [{"account": "autom_…", "amount": 1000000000}],
      "representatives": [{"account": "autom_…", "weight": 1}],
      "online_floor_percent": 75
    }

Amounts are integers of micro-AUTOM. The genesis hash is the network id every block and vote signs for.
`online_floor_percent`: the online representative weight a quorum is computed from is never taken below
this share of the total weight, so a lone node (or a minority partition) cannot confirm by itself.
The default 75 makes a quorum (over 2/3 of it) always more than half of all weight: two partitions can
never both confirm.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from avadios.ledger.address import decode_address, encode_address
from avadios.ledger.amount import MAX_AMOUNT, MICRO_PER_AUTOM, Micro
from avadios.ledger.errors import BadGenesis, LedgerError

FORMAT = "avadios-genesis-v1"
GENESIS_FILE = "genesis.json"
DEVNET_BALANCE = Micro(1_000 * MICRO_PER_AUTOM)
DEFAULT_ONLINE_FLOOR_PERCENT = 75


@dataclass(frozen=True, slots=True)
class Allocation:
    account: bytes
    amount: Micro


@dataclass(frozen=True, slots=True)
class RepresentativeWeight:
    account: bytes
    weight: int


@dataclass(frozen=True, slots=True)
class Genesis:
    name: str
    balances: tuple[Allocation, ...]
    representatives: tuple[RepresentativeWeight, ...]
    online_floor_percent: int = DEFAULT_ONLINE_FLOOR_PERCENT

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 64:
            raise BadGenesis("the genesis needs a name of 1 to 64 characters")
        accounts = [a.account for a in self.balances]
        if len(set(accounts)) != len(accounts):
            raise BadGenesis("an account appears twice in the genesis balances")
        for a in self.balances:
            if len(a.account) != 32 or not 0 < a.amount <= MAX_AMOUNT:
                raise BadGenesis(f"bad genesis balance for {a.account.hex()}: {a.amount}")
        if self.supply > MAX_AMOUNT:
            raise BadGenesis(f"the genesis supply {self.supply} overflows the ledger's limit {MAX_AMOUNT}")
        reps = [r.account for r in self.representatives]
        if not reps or len(set(reps)) != len(reps):
            raise BadGenesis("the genesis needs one or more representatives, each listed once")
        if any(len(r.account) != 32 or not 0 < r.weight <= 2**32 for r in self.representatives):
            raise BadGenesis("every representative needs a 32-byte key and a weight between 1 and 2^32")
        if not 0 <= self.online_floor_percent <= 100:
            raise BadGenesis("online_floor_percent must be between 0 and 100")

    @property
    def supply(self) -> int:
        return sum(a.amount for a in self.balances)

    @property
    def total_weight(self) -> int:
        return sum(r.weight for r in self.representatives)

    @property
    def hash(self) -> bytes:
        """The network id: BLAKE3 of a canonical encoding (sorted, so the JSON's order does not matter)."""
        h = blake3.blake3(FORMAT.encode() + b"\x00" + self.name.encode() + b"\x00")
        for a in sorted(self.balances, key=lambda x: x.account):
            h.update(a.account + struct.pack(">Q", a.amount))
        h.update(b"\x00reps")
        for r in sorted(self.representatives, key=lambda x: x.account):
            h.update(r.account + struct.pack(">Q", r.weight))
        h.update(struct.pack(">B", self.online_floor_percent))
        return h.digest()

    def weight_of(self, account: bytes) -> int:
        return next((r.weight for r in self.representatives if r.account == account), 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "balances": [{"account": encode_address(a.account), "amount": a.amount} for a in self.balances],
            "representatives": [
                {"account": encode_address(r.account), "weight": r.weight} for r in self.representatives
            ],
            "online_floor_percent": self.online_floor_percent,
        }

    @classmethod
    def from_json(cls, data: Any) -> Genesis:
        try:
            if data.get("format") != FORMAT:
                raise BadGenesis(f"not a genesis file: format must be {FORMAT!r}")
            balances = tuple(
                Allocation(decode_address(b["account"]), Micro(_int(b["amount"], "amount"))) for b in data["balances"]
            )
            reps = tuple(
                RepresentativeWeight(decode_address(r["account"]), _int(r["weight"], "weight"))
                for r in data["representatives"]
            )
            floor = _int(data.get("online_floor_percent", DEFAULT_ONLINE_FLOOR_PERCENT), "online_floor_percent")
            return cls(str(data["name"]), balances, reps, floor)
        except LedgerError as exc:
            raise BadGenesis(f"bad genesis: {exc.message}") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadGenesis(f"bad genesis: missing or wrong field ({exc})") from None


def _int(value: Any, what: str) -> int:
    # JSON floats (1e6, 1.0) are refused: an amount is an exact integer of micro-AUTOM.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadGenesis(f"genesis {what} must be an integer, got {value!r}")
    return value


def load_genesis(path: Path) -> Genesis:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BadGenesis(f"{path} is not JSON: {exc}") from None
    return Genesis.from_json(data)


def save_genesis(genesis: Genesis, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(genesis.to_json(), indent=2) + "\n")
    tmp.replace(path)


def devnet_genesis(
    node_keys: Sequence[bytes],
    wallets: Sequence[bytes] | None = None,
    balance: Micro = DEVNET_BALANCE,
    name: str | None = None,
) -> Genesis:
    """A devnet of N nodes: each node key is a representative of equal weight, and each node's wallet
    (or, without wallets, the node key's own account) starts with `balance` (1,000 AUTOM)."""
    if not node_keys:
        raise BadGenesis("a devnet needs at least one node")
    funded = list(wallets) if wallets is not None else list(node_keys)
    if len(funded) != len(node_keys):
        raise BadGenesis("give one wallet per node key")
    return Genesis(
        name=name or f"devnet-{len(node_keys)}",
        balances=tuple(Allocation(account, balance) for account in funded),
        representatives=tuple(RepresentativeWeight(key, 1) for key in node_keys),
    )


def solo_genesis(node_key: bytes, wallet: bytes | None) -> Genesis:
    """The network of a node started alone: it is the only representative, its wallet holds the supply."""
    return Genesis(
        name=f"solo-{node_key[:4].hex()}",
        balances=(Allocation(wallet or node_key, DEVNET_BALANCE),),
        representatives=(RepresentativeWeight(node_key, 1),),
    )
