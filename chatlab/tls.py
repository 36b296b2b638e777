"""TLS: encryption and server authentication for the chat.

Without TLS, anyone on the path -- the café Wi-Fi, a switch with a mirror
port, a relay in the middle -- reads every message, and could change it.
TLS (RFC 8446) wraps the TCP byte stream: a handshake proves the server's
identity with a certificate signed by an authority the client trusts, and
agrees on keys; everything after it is encrypted and integrity-protected.

For a classroom there is no public authority to ask, so ``make_lab_pki``
creates a small one: a lab certificate authority (CA), and a server
certificate it signs.  Students trust the CA file; the server presents
its certificate and key.

TLS is sans-IO too.  ``TLSLayer`` wraps Python's ``ssl.SSLObject``, which
reads and writes *memory buffers* instead of a socket: raw bytes from the
network go in with ``receive()``, plaintext comes out; plaintext goes in
with ``send()``, and ``outgoing()`` hands back the bytes to write.  So the
same servers and client that move plaintext today move TLS records, with
no change to how they wait for sockets.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

#: Seconds a client has to complete the TLS handshake before the server hangs up.
HANDSHAKE_TIMEOUT = 10.0

#: What a server answers, in plain text, to plain text sent to its TLS port
#: (someone with ``nc``, or a client without ``--tls``): one line, then it closes.
PLAIN_TEXT_HINT = b"chatlab: this port speaks TLS; connect with 'chatlab chat --tls'\n"


# ------------------------------------------------------------- certificates


def make_lab_pki(folder: str | Path, hosts: list[str] | None = None, days: int = 365) -> dict[str, Path]:
    """Create a lab CA and a server certificate for ``hosts``; return the file paths.

    Files: ``ca.pem`` (give this to every student), ``server.pem`` and
    ``server-key.pem`` (for ``chatlab serve --tls``), ``ca-key.pem`` (keep it:
    it can sign certificates that every student would trust).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = hosts or ["localhost", "127.0.0.1", "::1"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatlab lab CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        # Clients check the name they dialled against this list, not the common name.
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    paths = {"ca": folder / "ca.pem", "ca_key": folder / "ca-key.pem",
             "cert": folder / "server.pem", "key": folder / "server-key.pem"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for which, k in (("ca_key", ca_key), ("key", key)):
        paths[which].write_bytes(pem_key(k))
        paths[which].chmod(0o600)  # private keys: readable by their owner only
    return paths


# ----------------------------------------------------------------- contexts


def server_context(certfile: str | Path, keyfile: str | Path) -> ssl.SSLContext:
    """What a server needs: its certificate chain and private key; TLS 1.2 at least."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile))
    return context


def client_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """What a client needs: whom to trust.  The lab CA file, or the system's authorities."""
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context  # verifies the certificate and the host name: never turn that off


# -------------------------------------------------------------- the layer


class TLSLayer:
    """One TLS connection over memory buffers: bytes in, bytes out, no socket.

    Thread-safe: a reader thread may call ``receive`` while a writer thread
    calls ``send`` and ``outgoing``.
    """

    def __init__(self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None):
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._lock = threading.Lock()
        self.server_side = server_side
        self.handshake_done = False

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete (may raise ssl.SSLError)."""
        with self._lock:
            if not self.handshake_done:
                try:
                    self._tls.do_handshake()
                    self.handshake_done = True
                except ssl.SSLWantReadError:
                    pass  # waiting for the peer's next flight of records
            return self.handshake_done

    def receive(self, data: bytes | None) -> bytes:
        """Feed raw bytes from the network; return the plaintext they completed.

        ``b""`` means the peer closed its side; ``None`` only collects
        plaintext already buffered (records that came with the handshake).
        Raises ``ssl.SSLError`` on a broken or forged stream.
        """
        with self._lock:
            if data:
                self._incoming.write(data)
            elif data is not None:
                self._incoming.write_eof()
            if not self.handshake_done:
                return b""
            chunks = []
            while True:
                try:
                    chunk = self._tls.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    def close(self) -> None:
        """Queue a close_notify alert: a clean end, which an attacker cannot fake by cutting TCP."""
        with self._lock:
            try:
                self._tls.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass  # the peer's answering alert is not needed

    def send(self, data: bytes) -> None:
        """Encrypt ``data``; collect the records with ``outgoing()``."""
        with self._lock:
            self._tls.write(data)

    def outgoing(self) -> bytes:
        """The raw bytes waiting to be written to the network."""
        with self._lock:
            return self._outgoing.read()

    @property
    def version(self) -> str | None:
        return self._tls.version()

    @property
    def cipher(self) -> str | None:
        cipher = self._tls.cipher()
        return cipher[0] if cipher else None


def looks_like_tls(first_bytes: bytes) -> bool:
    """A TLS connection starts with a handshake record: 0x16, then version 0x03 0x0N."""
    return len(first_bytes) >= 2 and first_bytes[0] == 0x16 and first_bytes[1] == 0x03


class NotTLS(ConnectionError):
    """The peer sent something that is not a TLS handshake (plain text to a TLS port)."""


def handshake_over(sock: socket.socket, layer: TLSLayer, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Run a TLS handshake on a blocking socket, within ``timeout`` seconds in all.

    Raises TimeoutError for a stalled handshake, NotTLS for plain text,
    ssl.SSLError for a failed one (e.g. an untrusted certificate).
    """
    import time

    deadline = time.monotonic() + timeout
    first = True
    try:
        while not layer.handshake():
            if out := layer.outgoing():
                sock.sendall(out)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"TLS handshake not finished within {timeout:g} s")
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the peer closed the connection during the TLS handshake")
            if first and layer.server_side and not looks_like_tls(data):
                raise NotTLS(f"expected a TLS handshake, got {data[:16]!r}")
            first = False
            layer.receive(data)
        if out := layer.outgoing():
            sock.sendall(out)
    finally:
        sock.settimeout(None)
