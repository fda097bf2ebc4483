"""TLS Secrets as ingress-nginx reads them: kubernetes.io/tls data parsed, checked and matched to hosts.

Upstream (internal/ingress/controller/store/backend_ssl.go, internal/net/ssl): the certificate and key
must parse and belong together, else the Secret is not used; a host whose certificate does not cover
it (SAN, with RFC 6125 wildcards of exactly one label) is served the default certificate.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertInfo:
    pem: str = ""  # certificate chain followed by the key: one file, as ingress-nginx writes it
    dns_names: tuple[str, ...] = ()
    not_after: float = 0.0
    serial: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _b64(data: dict, key: str) -> bytes | None:
    v = data.get(key)
    if not isinstance(v, str):
        return None
    try:
        return base64.b64decode(v, validate=True)
    except ValueError:
        return None


def parse_tls_secret(secret: dict | None) -> CertInfo:
    if secret is None:
        return CertInfo(error="secret not found")
    data = secret.get("data") or {}
    crt, key = _b64(data, "tls.crt"), _b64(data, "tls.key")
    if not crt or not key:
        return CertInfo(error="secret has no tls.crt and tls.key")
    return parse_pem(crt, key)


def parse_pem(crt: bytes, key: bytes) -> CertInfo:
    try:
        certs = x509.load_pem_x509_certificates(crt)
        pkey = serialization.load_pem_private_key(key, password=None)
    except ValueError as e:
        return CertInfo(error=f"unparsable certificate or key: {e}")
    leaf = certs[0]
    fmt, pub = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(fmt, pub) != pkey.public_key().public_bytes(fmt, pub):
        return CertInfo(error="private key does not match the certificate")
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    text = crt.decode(errors="replace").strip() + "\n" + key.decode(errors="replace").strip() + "\n"
    return CertInfo(pem=text, dns_names=tuple(names), not_after=leaf.not_valid_after_utc.timestamp(),
                    serial=format(leaf.serial_number, "x"))


def covers(names: tuple[str, ...] | list[str], host: str) -> bool:
    """Does a certificate with these DNS names serve `host` (itself possibly a wildcard host)?"""
    host = host.lower().rstrip(".")
    for n in names:
        if n == host:
            return True
        if n.startswith("*.") and not host.startswith("*."):
            first, _, rest = host.partition(".")
            if first and rest == n[2:]:
                return True
    return False
