"""What hosters are owed, without I/O: a term's price per hoster and the payouts its audits earned.

A file's owner holds, at upload, one term's price for every hoster (its shard bytes × its advertised price per
GiB-month × the term); when the term is settled each hoster gets its price × the share of its audits that
passed that term, and the rest comes back to the owner. Conserved by construction: the ledger's SETTLE moves
exactly what is paid out of the hold, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GIB = 1 << 30
MONTH_S = 30 * 24 * 3600


def term_price(shard_bytes: int, price_per_gib_month: int, term_s: float) -> int:
    """micro-AUTOM for keeping `shard_bytes` for `term_s` seconds, rounded up (a non-free hoster earns at least 1)."""
    if price_per_gib_month <= 0 or shard_bytes <= 0:
        return 0
    numerator = shard_bytes * price_per_gib_month * int(term_s)
    return max(1, -(-numerator // (GIB * MONTH_S)))


@dataclass(frozen=True, slots=True)
class Payout:
    payee: bytes
    amount: int  # 0: unpaid
    failed_all: bool  # no audit of it passed this term (it was audited, and failed or did not answer)


def payouts(prices: Mapping[bytes, int], tallies: Mapping[bytes, tuple[int, int]]) -> list[Payout]:
    """Each payee's share of its price: passed / audited this term (nothing for a hoster never audited)."""
    out = []
    for payee, price in prices.items():
        passed, audited = tallies.get(payee, (0, 0))
        amount = price * passed // audited if audited else 0
        out.append(Payout(payee, amount, audited > 0 and passed == 0))
    return out
