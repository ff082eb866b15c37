"""The wallet: a BIP39 mnemonic, the Ed25519 account key derived from it (kept 0600 in the home, never sent
anywhere), and the blocks it signs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import grpc
from mnemonic import Mnemonic
from nacl.signing import SigningKey

from avadios.identity import check_secret_permissions, write_secret_file
from avadios.ledger.address import encode_address
from avadios.ledger.amount import check_amount
from avadios.ledger.block import (
    HOLD,
    MAX_CLOCK_SKEW_MS,
    RECEIVE,
    REFUND,
    SEND,
    SETTLE,
    UNPAID_REASONS,
    ZERO_HASH,
    Block,
    block_hash,
    check_shape,
    sign_block,
)
from avadios.ledger.errors import (
    HoldNotExpired,
    InsufficientFunds,
    LedgerError,
    MalformedBlock,
    OverPriceCap,
    PayeeNotEligible,
    SettleExceedsHold,
    SettleIncomplete,
)
from avadios.v1 import ledger_pb2

WALLET_FILE = "wallet.seed"
MNEMONIC_WORDS = 24
_KDF_DOMAIN = b"avadios-wallet-v1"


class WalletError(LedgerError):
    reason = "wallet"


class WalletExists(WalletError):
    reason = "wallet_exists"


class NoWallet(WalletError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "no_wallet"


class BadMnemonic(WalletError):
    reason = "bad_mnemonic"


def new_mnemonic() -> str:
    return Mnemonic("english").generate(strength=MNEMONIC_WORDS * 32 // 3)


def seed_from_mnemonic(words: str, passphrase: str = "") -> bytes:
    """The 32-byte Ed25519 seed of a mnemonic: BIP39's PBKDF2 seed, narrowed with a domain-tagged BLAKE3."""
    words = " ".join(words.lower().split())
    if not Mnemonic("english").check(words):
        raise BadMnemonic("the mnemonic is not a valid BIP39 English phrase (a word or the checksum is wrong)")
    return blake3.blake3(_KDF_DOMAIN + Mnemonic.to_seed(words, passphrase)).digest()


@dataclass(frozen=True, slots=True)
class ChainTip:
    """What a wallet needs to append to its chain: the confirmed head as the ledger reports it."""

    head: bytes = ZERO_HASH
    height: int = 0
    balance: int = 0
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Wallet:
    signing_key: SigningKey

    @classmethod
    def from_seed(cls, seed: bytes) -> Wallet:
        return cls(SigningKey(seed))

    @classmethod
    def generate(cls) -> Wallet:
        return cls(SigningKey.generate())

    @property
    def account(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def address(self) -> str:
        return encode_address(self.account)

    # ---- blocks ------------------------------------------------------------------------------------------

    def _next(self, tip: ChainTip, kind: int, balance: int, now_ms: int | None) -> Block:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return Block(
            kind=kind,  # type: ignore[arg-type]
            account=self.account,
            previous=tip.head,
            height=tip.height + 1,
            balance=balance,
            timestamp_ms=max(now, tip.timestamp_ms, 1),
        )

    def _sign(self, block: Block, network: bytes) -> Block:
        sign_block(block, self.signing_key, network)
        check_shape(block)  # the replica would refuse it for the same reason: say so before it leaves
        return block

    def send(self, tip: ChainTip, destination: bytes, amount: int, network: bytes, now_ms: int | None = None) -> Block:
        amount = check_amount(amount)
        if amount > tip.balance:
            raise InsufficientFunds(f"cannot send {amount} micro-AUTOM: the spendable balance is {tip.balance}")
        block = self._next(tip, SEND, tip.balance - amount, now_ms)
        block.destination, block.amount = destination, amount
        return self._sign(block, network)

    def receive(self, tip: ChainTip, source: bytes, amount: int, network: bytes, now_ms: int | None = None) -> Block:
        block = self._next(tip, RECEIVE, tip.balance + amount, now_ms)
        block.source = source
        return self._sign(block, network)

    def hold(
        self,
        tip: ChainTip,
        request_id: bytes,
        amount: int,
        expires_at_ms: int,
        payees: Sequence[bytes],
        price_cap: int,
        network: bytes,
        now_ms: int | None = None,
    ) -> Block:
        """Lock `amount` for `request_id`: each of `payees` (1 to 32, not this account) may be paid up to
        `price_cap` by a later settle; until `expires_at_ms` (10 s to 7 days after now) the money leaves the hold
        only by paying one of them. A refund is possible from `expires_at_ms` + MAX_CLOCK_SKEW_MS."""
        amount = check_amount(amount)
        if amount > tip.balance:
            raise InsufficientFunds(f"cannot hold {amount} micro-AUTOM: the spendable balance is {tip.balance}")
        block = self._next(tip, HOLD, tip.balance - amount, now_ms)
        block.request_id, block.amount, block.expires_at_ms = request_id, amount, expires_at_ms
        block.payees.extend(payees)
        block.price_cap = price_cap
        return self._sign(block, network)

    def settle(
        self,
        tip: ChainTip,
        hold: Block,
        paid: Mapping[bytes, int],
        unpaid: Mapping[bytes, int],
        network: bytes,
        now_ms: int | None = None,
    ) -> Block:
        """Close `hold` (the HOLD block this wallet made): pay each payee in `paid` its amount (1 to the hold's
        price cap), leave each one in `unpaid` unpaid with its reason (a LedgerUnpaidReason), take back the rest.
        Every payee of the hold must be in exactly one of the two. A settle that pays no one is a refund with
        reasons: it cannot be made before the hold's expiry + MAX_CLOCK_SKEW_MS."""
        if hold.kind != HOLD or hold.account != self.account:
            raise MalformedBlock("settle a HOLD block this wallet made")
        eligible = set(hold.payees)
        strangers = (set(paid) | set(unpaid)) - eligible
        if strangers:
            raise PayeeNotEligible(f"{len(strangers)} account(s) named that the hold does not list as payees")
        both, missing = set(paid) & set(unpaid), eligible - set(paid) - set(unpaid)
        if both or missing:
            raise SettleIncomplete(
                f"every payee must be either paid or unpaid with a reason: {len(missing)} missing, {len(both)} both"
            )
        for amount in paid.values():
            check_amount(amount)
            if amount > hold.price_cap:
                raise OverPriceCap(f"a payout of {amount} is over the hold's price cap of {hold.price_cap}")
        if any(reason not in UNPAID_REASONS for reason in unpaid.values()):
            raise MalformedBlock(f"an unpaid payee needs one of the reasons {sorted(UNPAID_REASONS)}")
        total = sum(paid.values())
        if total > hold.amount:
            raise SettleExceedsHold(f"the settle pays {total} micro-AUTOM but the hold is only {hold.amount}")
        block = self._next(tip, SETTLE, tip.balance + hold.amount - total, now_ms)
        if not total and block.timestamp_ms < hold.expires_at_ms + MAX_CLOCK_SKEW_MS:
            raise HoldNotExpired(
                f"a settle that pays no one waits until the hold's expiry + {MAX_CLOCK_SKEW_MS} ms "
                f"({hold.expires_at_ms + MAX_CLOCK_SKEW_MS})"
            )
        block.source = block_hash(hold, network)
        block.payouts.extend(
            ledger_pb2.LedgerPayout(account=a, amount=paid.get(a, 0), reason=unpaid.get(a, 0))  # type: ignore[arg-type]
            for a in hold.payees
        )
        return self._sign(block, network)

    def refund(self, tip: ChainTip, hold: Block, network: bytes, now_ms: int | None = None) -> Block:
        """Take back all of `hold` (the HOLD block this wallet made), paying no one: from its expiry +
        MAX_CLOCK_SKEW_MS on, so that no replica's clock, ahead by up to that much, sees it before the expiry."""
        if hold.kind != HOLD or hold.account != self.account:
            raise MalformedBlock("refund a HOLD block this wallet made")
        block = self._next(tip, REFUND, tip.balance + hold.amount, now_ms)
        if block.timestamp_ms < hold.expires_at_ms + MAX_CLOCK_SKEW_MS:
            raise HoldNotExpired(
                f"a refund waits until the hold's expiry + {MAX_CLOCK_SKEW_MS} ms "
                f"({hold.expires_at_ms + MAX_CLOCK_SKEW_MS}); it is {block.timestamp_ms}"
            )
        block.source = block_hash(hold, network)
        return self._sign(block, network)


def wallet_path(home: Path) -> Path:
    return home / WALLET_FILE


def create_wallet(home: Path, words: str) -> Wallet:
    """Store the wallet of `words` in `home` (0600 from the first byte); refuses to replace one."""
    seed = seed_from_mnemonic(words)
    path = wallet_path(home)
    try:
        write_secret_file(path, seed)
    except FileExistsError:
        raise WalletExists(
            f"{path} already holds a wallet; move it away first if you really mean to replace it"
        ) from None
    return Wallet.from_seed(seed)


def load_wallet(home: Path) -> Wallet:
    path = wallet_path(home)
    if not path.exists():
        raise NoWallet(f"no wallet in {home}: create one with `avadios wallet new --home {home}`")
    check_secret_permissions(path)
    seed = path.read_bytes()
    if len(seed) != 32:
        raise WalletError(f"{path} is not a 32-byte wallet seed")
    return Wallet.from_seed(seed)


def payee_account(home: Path, node_key: bytes) -> bytes:
    """The account a node is paid to for its work: its wallet's, or, on a node without a wallet, its node key's
    (a solo genesis funds the node key in that case too)."""
    return load_wallet(home).account if wallet_path(home).exists() else node_key


def node_wallet(home: Path, node_key: SigningKey) -> Wallet:
    """The wallet a running node pays and is paid with: the home's wallet, or its node key where it has none."""
    return load_wallet(home) if wallet_path(home).exists() else Wallet(node_key)
