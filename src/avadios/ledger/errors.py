"""Why the ledger refuses a block or an input: one exception per reason, each with its gRPC status."""

from __future__ import annotations

import grpc

from avadios.errors import AvadiosError


class LedgerError(AvadiosError):
    """A refused block or input. `reason` is a stable slug for scripts; the message is for people."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid"


# ---- the input itself is wrong (INVALID_ARGUMENT) ---------------------------------------------------------


class MalformedBlock(LedgerError):
    reason = "malformed_block"


class MalformedAddress(LedgerError):
    reason = "malformed_address"


class BadAmount(LedgerError):
    """Negative, zero where a payment is needed, over the supply, or with more than 6 decimals."""

    reason = "bad_amount"


class BadSignature(LedgerError):
    reason = "bad_signature"


class BadTimestamp(LedgerError):
    reason = "bad_timestamp"


class BalanceMismatch(LedgerError):
    reason = "balance_mismatch"


class BadGenesis(LedgerError):
    reason = "bad_genesis"


class BadVote(LedgerError):
    reason = "bad_vote"


# ---- the input is well formed but the ledger's state refuses it (FAILED_PRECONDITION) ----------------------


class LedgerConflict(LedgerError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "conflict"


class InsufficientFunds(LedgerConflict):
    reason = "insufficient_funds"


class UnknownPredecessor(LedgerConflict):
    """The block builds on a block this replica has not confirmed (yet)."""

    reason = "unknown_predecessor"


class StalePredecessor(LedgerConflict):
    """The block builds on a block that already has a confirmed successor: a fork, i.e. a double spend."""

    reason = "stale_predecessor"


class ReplayedBlock(LedgerConflict):
    reason = "replayed_block"


class AlreadyReceived(LedgerConflict):
    reason = "already_received"


class NothingPending(LedgerConflict):
    reason = "not_pending"


class UnknownHold(LedgerConflict):
    reason = "unknown_hold"


class HoldClosed(LedgerConflict):
    reason = "hold_closed"


class HoldExpired(LedgerConflict):
    reason = "hold_expired"


class HoldNotExpired(LedgerConflict):
    reason = "hold_not_expired"


class NotHolder(LedgerConflict):
    reason = "not_holder"


class PayeeNotEligible(LedgerConflict):
    reason = "payee_not_eligible"


class OverPriceCap(LedgerConflict):
    reason = "over_price_cap"


class SettleExceedsHold(LedgerConflict):
    reason = "settle_exceeds_hold"


class NotConfirmed(LedgerConflict):
    """A block is valid but did not reach quorum within the wait."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "not_confirmed"
