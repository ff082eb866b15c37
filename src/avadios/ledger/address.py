"""Account addresses: an Ed25519 public key in lowercase base32 with a BLAKE3 checksum, e.g. `autom_…`."""

from __future__ import annotations

import base64
import binascii

import blake3

from avadios.ledger.errors import MalformedAddress

PREFIX = "autom_"
KEY_BYTES = 32
CHECKSUM_BYTES = 8  # with the 32-byte key, 40 bytes: exactly 64 base32 characters, no padding


def _checksum(public_key: bytes) -> bytes:
    return blake3.blake3(b"avadios-address" + public_key).digest()[:CHECKSUM_BYTES]


def encode_address(public_key: bytes) -> str:
    if len(public_key) != KEY_BYTES:
        raise MalformedAddress(f"an account key is {KEY_BYTES} bytes, got {len(public_key)}")
    return PREFIX + base64.b32encode(public_key + _checksum(public_key)).decode().lower()


def decode_address(address: str) -> bytes:
    """The account's public key; a typo anywhere fails the checksum."""
    text = address.strip()
    if not text.startswith(PREFIX):
        raise MalformedAddress(f"address {address!r} does not start with {PREFIX!r}")
    body = text[len(PREFIX) :]
    if len(body) != 64:
        raise MalformedAddress(f"address {address!r} has {len(body)} characters after {PREFIX!r}, expected 64")
    try:
        raw = base64.b32decode(body.upper())
    except (binascii.Error, ValueError):
        raise MalformedAddress(f"address {address!r} is not base32") from None
    key, checksum = raw[:KEY_BYTES], raw[KEY_BYTES:]
    if _checksum(key) != checksum:
        raise MalformedAddress(f"address {address!r} has a wrong checksum (a typo?)")
    return key


def short(public_key: bytes) -> str:
    """A display form for logs and tables."""
    full = encode_address(public_key)
    return full[:14] + "…" + full[-6:]
