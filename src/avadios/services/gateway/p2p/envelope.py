"""Signed P2P envelopes: every request and reply between nodes is sealed here and opened (validated) here.

The Ed25519 signature covers a domain tag and every field: sender key, recipient node id, timestamp, nonce,
type, BLAKE3 of the body and the nonce it replies to. `open_envelope` refuses, with a status a peer can
read: a body over the size limit, a bad signature, another recipient, a timestamp outside ±60 s, a nonce
already seen from that sender. Unknown message types are refused by the dispatcher (UNIMPLEMENTED).
"""

from __future__ import annotations

import os
import struct
import time
from collections import OrderedDict

import blake3
import grpc
from google.protobuf.message import Message

from avadios.errors import AvadiosError
from avadios.identity import Identity, node_id_for, verify
from avadios.v1 import p2p_pb2

ENVELOPE_DOMAIN = b"avadios/envelope/v1\x00"
NONCE_BYTES = 16
CLOCK_SKEW_S = 60.0
MAX_BODY_BYTES = 1 << 20


class EnvelopeRefused(AvadiosError):
    """A P2P message that was not accepted; `code` says which check failed."""


class BadSignature(EnvelopeRefused):
    code = grpc.StatusCode.UNAUTHENTICATED


class WrongRecipient(EnvelopeRefused):
    code = grpc.StatusCode.PERMISSION_DENIED


class StaleTimestamp(EnvelopeRefused):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ReplayedNonce(EnvelopeRefused):
    code = grpc.StatusCode.ALREADY_EXISTS


class MessageTooLarge(EnvelopeRefused):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnknownMessageType(EnvelopeRefused):
    code = grpc.StatusCode.UNIMPLEMENTED


def type_name(message: Message | type[Message]) -> str:
    return message.DESCRIPTOR.full_name


def _signed_bytes(env: p2p_pb2.Envelope) -> bytes:
    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    return b"".join(
        (
            ENVELOPE_DOMAIN,
            field(env.sender_key),
            field(env.recipient.encode()),
            struct.pack(">q", env.timestamp_ms),
            field(env.nonce),
            field(env.type.encode()),
            blake3.blake3(env.body).digest(),
            field(env.in_reply_to),
        )
    )


def seal(identity: Identity, recipient: str, body: Message, in_reply_to: bytes = b"") -> p2p_pb2.Envelope:
    return seal_bytes(identity, recipient, type_name(body), body.SerializeToString(), in_reply_to)


def seal_bytes(
    identity: Identity, recipient: str, body_type: str, body: bytes, in_reply_to: bytes = b""
) -> p2p_pb2.Envelope:
    """An envelope around an already-encoded body (the door forwards bodies it never decodes)."""
    env = p2p_pb2.Envelope(
        sender_key=identity.public_key,
        recipient=recipient,
        timestamp_ms=int(time.time() * 1000),
        nonce=os.urandom(NONCE_BYTES),
        type=body_type,
        body=body,
        in_reply_to=in_reply_to,
    )
    env.signature = identity.sign(_signed_bytes(env))
    return env


class ReplayGuard:
    """Remembers (sender, nonce) pairs for as long as their timestamps could still be accepted."""

    def __init__(self, window_s: float = 2 * CLOCK_SKEW_S, max_entries: int = 1_000_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def check_and_remember(self, sender: bytes, nonce: bytes) -> None:
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self.max_entries):
            self._seen.popitem(last=False)
        key = sender + nonce
        if key in self._seen:
            raise ReplayedNonce("replayed envelope: this nonce was already used by this sender")
        self._seen[key] = now + self.window_s


def open_envelope(
    env: p2p_pb2.Envelope,
    me: str,
    guard: ReplayGuard,
    max_body: int = MAX_BODY_BYTES,
    skew_s: float = CLOCK_SKEW_S,
    now: float | None = None,
) -> str:
    """Validate an envelope addressed to node `me`; returns the sender's node id or raises EnvelopeRefused."""
    if len(env.body) > max_body:
        raise MessageTooLarge(f"envelope body of {len(env.body)} bytes is over the limit of {max_body} bytes")
    if len(env.sender_key) != 32 or len(env.signature) != 64 or len(env.nonce) != NONCE_BYTES:
        raise BadSignature("envelope has no valid sender key, nonce or signature")
    if not verify(env.sender_key, _signed_bytes(env), env.signature):
        raise BadSignature("bad envelope signature: the message was altered or not signed by its sender")
    if env.recipient != me:
        raise WrongRecipient(f"envelope is addressed to {env.recipient[:16]}…, not to this node ({me[:16]}…)")
    now = time.time() if now is None else now
    offset = env.timestamp_ms / 1000 - now
    if abs(offset) > skew_s:
        raise StaleTimestamp(f"envelope timestamp is {offset:+.0f} s from this node's clock (allowed ±{skew_s:.0f} s)")
    guard.check_and_remember(env.sender_key, env.nonce)
    return node_id_for(env.sender_key)
