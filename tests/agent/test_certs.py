"""Consortium CA, leaf certificates and real TLS 1.3 handshakes over loopback sockets."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from site_agent.crypto.certs import client_context, fingerprint, issue_cert, make_ca, peer_common_name, server_context
from site_agent.errors import ConfigError


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CAs; a server and a client from the first; a client from the second."""
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca("Consortium A")
    other_key, other_cert = make_ca("Consortium B")
    s_key, s_cert = issue_cert(ca_key, ca_cert, "site-a", ["127.0.0.1", "localhost"], client=True, server=True)
    c_key, c_cert = issue_cert(ca_key, ca_cert, "alice", [], client=True, server=False)
    x_key, x_cert = issue_cert(other_key, other_cert, "mallory", [], client=True, server=False)
    files = {
        "ca": ca_cert,
        "other_ca": other_cert,
        "server_key": s_key,
        "server_cert": s_cert,
        "client_key": c_key,
        "client_cert": c_cert,
        "x_key": x_key,
        "x_cert": x_cert,
    }
    return {name: _write(tmp, name + ".pem", data) for name, data in files.items()}


def _verifies(cert_path: Path, ca_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def test_ca_is_a_ca(pki: dict[str, Path]) -> None:
    ca = x509.load_pem_x509_certificate(pki["ca"].read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    years = (ca.not_valid_after_utc - ca.not_valid_before_utc).days / 365.25
    assert 9.9 < years < 10.1


def test_leaf_signed_by_its_ca_only(pki: dict[str, Path]) -> None:
    assert _verifies(pki["server_cert"], pki["ca"])
    assert _verifies(pki["client_cert"], pki["ca"])
    assert not _verifies(pki["server_cert"], pki["other_ca"])
    assert not _verifies(pki["x_cert"], pki["ca"])


def test_leaf_extensions(pki: dict[str, Path]) -> None:
    server = x509.load_pem_x509_certificate(pki["server_cert"].read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = x509.load_pem_x509_certificate(pki["client_cert"].read_bytes())
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (server.not_valid_after_utc - server.not_valid_before_utc).days
    assert 729 <= days <= 731


def test_fingerprint_is_sha256_of_der(pki: dict[str, Path]) -> None:
    pem = pki["ca"].read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    assert fingerprint(pem) == hashlib.sha256(der).hexdigest()
    assert len(fingerprint(pem)) == 64


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "127.0.0.1"
) -> tuple[str | None, str | None, BaseException | None, BaseException | None]:
    """Run one handshake over loopback TCP; return (server's view of client CN, client's view
    of server CN, server error, client error)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                result["server_saw"] = peer_common_name(tls)
                result["version"] = tls.version()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["server_error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    client_saw: str | None = None
    client_error: BaseException | None = None
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=hostname) as tls,
        ):
            client_saw = peer_common_name(tls)
            # In TLS 1.3 the server checks the client certificate after the client finished,
            # so a refusal only shows when the client reads.
            assert tls.recv(2) == b"ok"
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    thread.join(5)
    listener.close()
    assert result.get("version", "TLSv1.3") == "TLSv1.3"
    return (
        result.get("server_saw"),  # type: ignore[return-value]
        client_saw,
        result.get("server_error"),  # type: ignore[return-value]
        client_error,
    )


def test_mutual_tls13_handshake(pki: dict[str, Path]) -> None:
    sctx = server_context(pki["server_cert"], pki["server_key"], pki["ca"])
    cctx = client_context(pki["client_cert"], pki["client_key"], pki["ca"])
    assert sctx.minimum_version == ssl.TLSVersion.TLSv1_3
    server_saw, client_saw, s_err, c_err = _handshake(sctx, cctx)
    assert (s_err, c_err) == (None, None)
    assert server_saw == "alice"
    assert client_saw == "site-a"


def test_client_without_certificate_refused(pki: dict[str, Path]) -> None:
    sctx = server_context(pki["server_cert"], pki["server_key"], pki["ca"])
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(cafile=str(pki["ca"]))
    server_saw, _, s_err, c_err = _handshake(sctx, bare)
    assert server_saw is None
    assert isinstance(s_err, ssl.SSLError)
    assert c_err is not None


def test_client_from_other_ca_refused(pki: dict[str, Path]) -> None:
    sctx = server_context(pki["server_cert"], pki["server_key"], pki["ca"])
    cctx = client_context(pki["x_cert"], pki["x_key"], pki["ca"])
    server_saw, _, s_err, c_err = _handshake(sctx, cctx)
    assert server_saw is None
    assert isinstance(s_err, ssl.SSLError)
    assert c_err is not None


def test_client_refuses_server_from_other_ca(pki: dict[str, Path]) -> None:
    sctx = server_context(pki["server_cert"], pki["server_key"], pki["ca"])
    cctx = client_context(pki["client_cert"], pki["client_key"], pki["other_ca"])
    _, client_saw, _, c_err = _handshake(sctx, cctx)
    assert client_saw is None
    assert isinstance(c_err, ssl.SSLCertVerificationError)


def test_client_checks_hostname(pki: dict[str, Path]) -> None:
    sctx = server_context(pki["server_cert"], pki["server_key"], pki["ca"])
    cctx = client_context(pki["client_cert"], pki["client_key"], pki["ca"])
    _, client_saw, _, c_err = _handshake(sctx, cctx, hostname="elsewhere.example")
    assert client_saw is None
    assert isinstance(c_err, ssl.SSLCertVerificationError)


def test_missing_files_are_config_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="cannot load TLS material"):
        server_context(tmp_path / "nope.pem", pki["server_key"], pki["ca"])
