"""TLS bound to the node's Ed25519 identity (the libp2p TLS pattern, made to work within what grpcio offers).

Each start makes an ephemeral P-256 key and two certificates for it, both carrying a non-critical extension
(OID 1.3.6.1.4.1.53594.1.1) = Ed25519 public key || Ed25519 signature over a fixed prefix + the certificate's
SubjectPublicKeyInfo. The extension is what a peer believes: the node id comes from that key, never from a
name in the certificate. The server certificate is self-signed (a dialer pins it after fetching it); the
client certificate is signed by a public "dummy CA" whose key every node derives from a published constant,
only because grpcio cannot ask for a client certificate without checking it against some CA. That CA's
signature proves nothing; the extension does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from avadios.errors import AvadiosError, Unavailable
from avadios.identity import Identity, node_id_for, verify

EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.53594.1.1")
SIGNATURE_PREFIX = b"avadios-tls-handshake:"
SERVER_NAME = "avadios-node"  # a name both sides agree on; it proves nothing
_DUMMY_CA_SEED = b"avadios dummy client CA v1: this key is public on purpose"
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class PeerUnauthenticated(AvadiosError):
    """The peer's certificate does not prove an Ed25519 identity (or not the one we pinned)."""

    code = grpc.StatusCode.UNAUTHENTICATED


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _dummy_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    scalar = int.from_bytes(hashlib.sha256(_DUMMY_CA_SEED).digest(), "big") % (_P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("avadios dummy client CA"))
        .issuer_name(_name("avadios dummy client CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 50))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _identity_extension(identity: Identity, key: ec.EllipticCurvePrivateKey) -> x509.UnrecognizedExtension:
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    signature = identity.sign(SIGNATURE_PREFIX + spki)
    return x509.UnrecognizedExtension(EXTENSION_OID, identity.public_key + signature)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class NodeTls:
    """The node's TLS material for one run: PEM bytes for grpcio, and a file pair for Python's ssl module."""

    key_pem: bytes
    server_cert_pem: bytes
    client_cert_pem: bytes
    ca_cert_pem: bytes
    client_files: tuple[Path, Path]  # (cert chain, key) for the asyncio TLS probe

    @classmethod
    def create(cls, identity: Identity, run_dir: Path | None = None) -> NodeTls:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        extension = _identity_extension(identity, key)
        validity = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30))
        san = x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)])
        server = (
            x509.CertificateBuilder()
            .subject_name(_name(SERVER_NAME))
            .issuer_name(_name(SERVER_NAME))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(san, critical=False)
            .add_extension(extension, critical=False)
            .sign(key, hashes.SHA256())
        )
        ca_key, ca_cert = _dummy_ca()
        client = (
            x509.CertificateBuilder()
            .subject_name(_name(identity.node_id[:32]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(extension, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        if run_dir is not None:  # only `avadios up` makes it; a container's home may not have it
            run_dir.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="avadios-tls-", dir=run_dir))
        cert_file, key_file = directory / "client.pem", directory / "client.key"
        cert_file.write_bytes(_pem(client))
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        return cls(key_pem, _pem(server), _pem(client), _pem(ca_cert), (cert_file, key_file))

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.server_cert_pem)], root_certificates=self.ca_cert_pem, require_client_auth=True
        )

    def channel_credentials(self, pinned_server_pem: bytes) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=pinned_server_pem, private_key=self.key_pem, certificate_chain=self.client_cert_pem
        )

    def probe_context(self) -> ssl.SSLContext:
        # Only to read the server's certificate: whatever it is, the extension check below decides.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(str(self.client_files[0]), str(self.client_files[1]))
        ctx.set_alpn_protocols(["h2"])
        return ctx


def peer_key_from_cert(cert_bytes: bytes) -> bytes:
    """The Ed25519 public key a certificate (PEM or DER) proves, or PeerUnauthenticated."""
    try:
        cert = (
            x509.load_pem_x509_certificate(cert_bytes)
            if cert_bytes.startswith(b"-----")
            else x509.load_der_x509_certificate(cert_bytes)
        )
        value = cert.extensions.get_extension_for_oid(EXTENSION_OID).value
    except (ValueError, x509.ExtensionNotFound):
        raise PeerUnauthenticated("peer certificate carries no AVADIOS identity extension") from None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if len(raw) != 96:
        raise PeerUnauthenticated("peer certificate's identity extension is malformed")
    public_key, signature = raw[:32], raw[32:]
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if not verify(public_key, SIGNATURE_PREFIX + spki, signature):
        raise PeerUnauthenticated("peer certificate's identity signature does not cover its key")
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PeerUnauthenticated("peer certificate is not valid now")
    return public_key


async def fetch_server_cert(tls: NodeTls, host: str, port: int, timeout: float = 5.0) -> tuple[bytes, str]:
    """Open a plain TLS connection, read the server's certificate and the node id it proves:
    (PEM to pin, node id). grpcio cannot show us the certificate itself."""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port, ssl=tls.probe_context())
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise Unavailable(f"cannot reach peer at {host}:{port}: {exc}") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not der:
        raise PeerUnauthenticated(f"peer at {host}:{port} sent no certificate")
    public_key = peer_key_from_cert(der)
    pem = _pem(x509.load_der_x509_certificate(der))
    return pem, node_id_for(public_key)
