"""The node's Ed25519 identity: a 0600 key file under the home, and the node id derived from it."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import blake3
from nacl.signing import SigningKey, VerifyKey

KEY_FILE = "node.key"


class KeyPermissionError(Exception):
    """The key file is readable by others: refuse to use a key that may have leaked."""


@dataclass(frozen=True, slots=True)
class Identity:
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def node_id(self) -> str:
        return node_id_for(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def node_id_for(public_key: bytes) -> str:
    """A node id is the BLAKE3 hash of its Ed25519 public key, in hex."""
    return blake3.blake3(public_key).hexdigest()


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except Exception:
        return False
    return True


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the first byte on (no window where others may read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def check_secret_permissions(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyPermissionError(
            f"{path} has permissions {mode:04o}; it must be readable only by its owner. Fix it with: chmod 600 {path}"
        )


def load_or_create(home: Path) -> Identity:
    """Load the node key from `home`, creating it on first start."""
    path = home / KEY_FILE
    if not path.exists():
        # Several processes may start at once on a fresh home (compose): the first one creates the key.
        with contextlib.suppress(FileExistsError):
            write_secret_file(path, bytes(SigningKey.generate()))
    check_secret_permissions(path)
    seed = path.read_bytes()
    if len(seed) != 32:
        raise ValueError(f"{path} is not a 32-byte Ed25519 seed ({len(seed)} bytes); move it away to create a new key")
    return Identity(SigningKey(seed))


def load(home: Path) -> Identity:
    """Load an existing node key; fail if the node was never started."""
    path = home / KEY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no node key at {path}: start the node once with `avadios up --home {home}`")
    return load_or_create(home)


API_KEY_FILE = "api.key"


def load_or_create_api_key(home: Path) -> str:
    """The bearer key the local HTTP API demands when it listens beyond loopback (0600, made at first start)."""
    path = home / API_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            write_secret_file(path, ("avk-" + os.urandom(24).hex()).encode())
    check_secret_permissions(path)
    return path.read_text().strip()
