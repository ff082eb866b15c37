"""AES-256-GCM for one file: a fresh random key per file, and a nonce per segment derived from its index.

Why a nonce is never reused: each file has its own key (32 random bytes), and under that key the nonce of
segment i is the fixed domain 0x00000000 followed by i as 8 big-endian bytes, so no two segments of one file
share a nonce, and the file's encrypted name uses domain 0x00000001 (a nonce no segment can have). The segment
index is also the associated data, so a segment moved to another position fails its tag.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from avadios.services.storage.errors import BadCapability, SegmentCorrupted

KEY_BYTES = 32
TAG_BYTES = 16
_SEGMENT_DOMAIN = b"\x00\x00\x00\x00"
_NAME_DOMAIN = b"\x00\x00\x00\x01"
_NAME_AAD = b"avadios-file-name"


def new_file_key() -> bytes:
    return os.urandom(KEY_BYTES)


def segment_nonce(index: int) -> bytes:
    return _SEGMENT_DOMAIN + struct.pack(">Q", index)


def _aad(index: int) -> bytes:
    return b"avadios-segment" + struct.pack(">Q", index)


def encrypt_segment(key: bytes, index: int, plaintext: bytes) -> bytes:
    return AESGCM(key).encrypt(segment_nonce(index), plaintext, _aad(index))


def decrypt_segment(key: bytes, index: int, ciphertext: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(segment_nonce(index), ciphertext, _aad(index))
    except InvalidTag:
        raise SegmentCorrupted(f"segment {index} failed its AES-GCM tag: tampered bytes or a wrong key") from None


def encrypt_name(key: bytes, name: str) -> bytes:
    return AESGCM(key).encrypt(_NAME_DOMAIN + bytes(8), name.encode(), _NAME_AAD)


def decrypt_name(key: bytes, blob: bytes) -> str:
    """The file's name; a wrong key fails here, before any segment is read, so no plaintext is ever written."""
    try:
        return AESGCM(key).decrypt(_NAME_DOMAIN + bytes(8), blob, _NAME_AAD).decode()
    except (InvalidTag, UnicodeDecodeError):
        raise BadCapability("the capability's key does not open this file (wrong or altered capability)") from None
