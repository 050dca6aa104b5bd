"""The consortium's X.509 certificates and the TLS 1.3 contexts built on them.

A consortium has one CA (made by ``mpc-consortium init``). Every site agent and every analyst
holds a leaf certificate issued by it; agents talk mutual TLS 1.3 and trust that CA alone, so a
certificate from any other CA (including the system store) is refused. Keys are ECDSA P-256,
which every TLS 1.3 stack supports and which keeps handshakes small.

Everything here is pure: PEM bytes in, PEM bytes or ``ssl.SSLContext`` out, no sockets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from site_agent.errors import AuthError, ConfigError

CA_VALIDITY = dt.timedelta(days=3652)
LEAF_VALIDITY = dt.timedelta(days=730)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between machines

PathLike = str | Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures (ECDSA in TLS 1.3) only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(name: str) -> tuple[bytes, bytes]:
    """Create a consortium CA: returns (private key PEM, self-signed certificate PEM).

    The CA may sign leaf certificates only (``path_length=0``) and is valid for ten years.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(signs_certificates=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _san_entry(host: str) -> x509.GeneralName:
    """A SAN entry for ``host``: an IP address if it parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_cert(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    common_name: str,
    hosts: list[str],
    client: bool,
    server: bool,
) -> tuple[bytes, bytes]:
    """Issue a leaf certificate signed by the CA: returns (private key PEM, certificate PEM).

    ``hosts`` become the subjectAltName (IP addresses or DNS names; hostname checks use these,
    never the common name). ``client``/``server`` select the extended key usages, so an
    analyst's client-only certificate cannot impersonate an agent's server.
    """
    if not (client or server):
        raise ValueError("a certificate must allow client or server authentication (or both)")
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key is not an ECDSA key")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = [
        oid for oid, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signs_certificates=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san_entry(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _base_context(purpose: ssl.Purpose, cert_path: PathLike, key_path: PathLike, ca_path: PathLike) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
        ctx.load_verify_locations(cafile=str(ca_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS material (cert {cert_path}, key {key_path}, CA {ca_path}): {exc}") from exc
    return ctx


def server_context(
    cert_pem_path: PathLike, key_pem_path: PathLike, ca_pem_path: PathLike, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A TLS 1.3 server context that verifies client certificates against the consortium CA.

    With ``require_client_cert`` false, a client that presents no certificate completes the
    handshake (one that presents a certificate the CA did not issue still fails it), so the
    application can refuse it with a reason it can read instead of a dropped connection: the
    application must then refuse every connection without a peer certificate.
    """
    ctx = _base_context(ssl.Purpose.CLIENT_AUTH, cert_pem_path, key_pem_path, ca_pem_path)
    if not require_client_cert:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(cert_path: PathLike, key_path: PathLike, ca_path: PathLike) -> ssl.SSLContext:
    """A TLS 1.3 client context: presents its certificate, verifies the server and its hostname."""
    ctx = _base_context(ssl.Purpose.SERVER_AUTH, cert_path, key_path, ca_path)
    ctx.check_hostname = True
    return ctx


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """The common name of the peer's certificate, which the handshake has already verified.

    Raises ``AuthError`` if the peer presented no certificate or it has no common name.
    """
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise AuthError("the peer presented no certificate")
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise AuthError("the peer certificate has no common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex (what ``openssl x509 -fingerprint`` hashes)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def peer_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """The :func:`fingerprint` of the certificate the peer presented in the handshake."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise AuthError("the peer presented no certificate")
    return hashlib.sha256(der).hexdigest()
