"""Money: integer micro-AUTOM (1 AUTOM = 1,000,000), parsed from and shown as exact decimal text."""

from __future__ import annotations

import re
from typing import NewType

from avadios.ledger.errors import BadAmount

Micro = NewType("Micro", int)
MICRO_PER_AUTOM = 1_000_000
DECIMALS = 6
# Amounts and balances travel as uint64 but stay within int64 so every language and SQL reads them alike.
MAX_AMOUNT = Micro(2**63 - 1)
_AUTOM = re.compile(r"^(\d{1,13})(?:\.(\d{1,6}))?$")


def parse_autom(text: str) -> Micro:
    """'1.5' -> 1_500_000 exactly. Refuses negatives, exponents, more than 6 decimals and overflow."""
    text = text.strip().replace("_", "")
    match = _AUTOM.fullmatch(text)
    if match is None:
        raise BadAmount(
            f"amount {text!r} is not a number of AUTOM with up to {DECIMALS} decimals (e.g. 12 or 0.000001)"
        )
    whole, frac = match.group(1), (match.group(2) or "")
    micro = int(whole) * MICRO_PER_AUTOM + int(frac.ljust(DECIMALS, "0"))
    return check_amount(micro)


def check_amount(micro: int, allow_zero: bool = False) -> Micro:
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise BadAmount(f"amount {micro!r} is not an integer of micro-AUTOM")
    if micro < 0:
        raise BadAmount(f"amount {micro} is negative")
    if micro == 0 and not allow_zero:
        raise BadAmount("amount is zero")
    if micro > MAX_AMOUNT:
        raise BadAmount(f"amount {micro} micro-AUTOM overflows the ledger's limit of {MAX_AMOUNT}")
    return Micro(micro)


def format_autom(micro: int) -> str:
    """1_500_000 -> '1.5'; 1 -> '0.000001'; exact, no float."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO_PER_AUTOM)
    text = f"{whole}.{frac:06d}".rstrip("0").rstrip(".")
    return sign + text
