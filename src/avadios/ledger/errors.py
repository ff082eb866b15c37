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


class NonCanonical(LedgerError):
    """A block, vote or page that carries bytes no field of ours reads (protobuf unknown fields), or is larger
    than the largest valid one: anyone could have added them, and they would be stored and sent on."""

    reason = "non_canonical"


class BadGossip(LedgerError):
    """A gossip batch of the wrong shape: no items, too many, or an item that is neither a block nor a vote."""

    reason = "bad_gossip"


class BadPeerReply(LedgerError):
    """A catch-up page that breaks the protocol (more than asked, out of order, another account, a chain that
    ends below the height its frontier claimed): the peer is lying or broken, and is not asked again soon."""

    reason = "bad_peer_reply"


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


class ForkLimit(LedgerConflict):
    """A slot (one account's predecessor) already has as many competing blocks as an election keeps."""

    reason = "fork_limit"


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


class HoldNotExpired(LedgerConflict):
    """Money would leave a hold without paying anyone before the hold has expired by every allowed clock."""

    reason = "hold_not_expired"


class NotHolder(LedgerConflict):
    reason = "not_holder"


class PayeeNotEligible(LedgerConflict):
    reason = "payee_not_eligible"


class OverPriceCap(LedgerConflict):
    reason = "over_price_cap"


class SettleExceedsHold(LedgerConflict):
    reason = "settle_exceeds_hold"


class SettleIncomplete(LedgerConflict):
    """A settle must name every payee of its hold, in the hold's order: paid, or unpaid with a reason."""

    reason = "settle_incomplete"


class NotConfirmed(LedgerConflict):
    """A block is valid but did not reach quorum within the wait."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "not_confirmed"
