"""Capability strings: a read-cap holds the file key and the root hash; a verify-cap holds only the root hash.

    avadios:file:1:<root>:<key>     read-cap: find, check and decrypt the file
    avadios:verify:1:<root>         verify-cap: find and check the shards (what a hoster or an auditor gets)

`root` is the BLAKE3 of the file's layout (avadios.services.storage.layout) and `key` the file's AES-256 key,
each 32 bytes in lowercase RFC 4648 base32 without padding (52 characters), so a cap survives copy and paste.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from avadios.services.storage.errors import BadCapability

READ_PREFIX = "avadios:file:1:"
VERIFY_PREFIX = "avadios:verify:1:"
_B32_LEN = 52


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def _unb32(text: str, what: str) -> bytes:
    if len(text) != _B32_LEN:
        raise BadCapability(f"the capability's {what} is {len(text)} characters, not {_B32_LEN}: it was cut or altered")
    try:
        return base64.b32decode(text.upper() + "====")
    except (binascii.Error, ValueError):
        raise BadCapability(f"the capability's {what} is not base32") from None


@dataclass(frozen=True, slots=True)
class VerifyCap:
    root: bytes

    def __str__(self) -> str:
        return VERIFY_PREFIX + _b32(self.root)

    @property
    def file_id(self) -> str:
        return self.root.hex()


@dataclass(frozen=True, slots=True)
class ReadCap:
    root: bytes
    key: bytes

    def __str__(self) -> str:
        return f"{READ_PREFIX}{_b32(self.root)}:{_b32(self.key)}"

    @property
    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.root)

    @property
    def file_id(self) -> str:
        return self.root.hex()


def parse_read_cap(text: str) -> ReadCap:
    text = text.strip()
    if text.startswith(VERIFY_PREFIX):
        raise BadCapability("this is a verify-cap: it checks a file's shards but cannot read the file")
    if not text.startswith(READ_PREFIX):
        raise BadCapability(f"not a file capability: it should start with {READ_PREFIX!r}")
    parts = text[len(READ_PREFIX) :].split(":")
    if len(parts) != 2:
        raise BadCapability("a read-cap has a root and a key after the prefix: it was cut or altered")
    return ReadCap(_unb32(parts[0], "root hash"), _unb32(parts[1], "key"))


def parse_any_cap(text: str) -> ReadCap | VerifyCap:
    """A read-cap or a verify-cap (enough to check, list or remove a file by its root)."""
    text = text.strip()
    if text.startswith(VERIFY_PREFIX):
        return VerifyCap(_unb32(text[len(VERIFY_PREFIX) :], "root hash"))
    return parse_read_cap(text)
