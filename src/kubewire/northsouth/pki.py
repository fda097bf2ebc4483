"""The cluster's certificate authority: the emulated internet's trusted root.

`<state>/pki/ca.crt` (and its key) is created once per cluster; `kubewire curl` trusts it from the
internet client, as a browser trusts a public CA. The ingress controller gets certificates from it
for Ingress hosts: the default certificate (every host the controller serves, so HTTPS to a host
without a TLS section verifies, as it would behind a CDN with a wildcard certificate), and, on
request, certificates into kubernetes.io/tls Secrets (cert-manager's ingress-shim: an Ingress annotated
`cert-manager.io/cluster-issuer: kubewire-ca` gets each `spec.tls[].secretName` issued for its hosts).
"""

from __future__ import annotations

import base64
import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_ANNOTATIONS = ("cert-manager.io/cluster-issuer", "cert-manager.io/issuer")
ISSUER_NAME = "kubewire-ca"
ISSUED_BY_ANNOTATION = "kubewire.io/issued-by"
VALIDITY = datetime.timedelta(days=90)
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class CA:
    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, directory: str) -> None:
        self.cert, self.key, self.dir = cert, key, directory

    @property
    def cert_path(self) -> str:
        return f"{self.dir}/ca.crt"

    @classmethod
    def load_or_create(cls, directory: str, cluster: str) -> CA:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        crt, key = f"{directory}/ca.crt", f"{directory}/ca.key"
        if os.path.exists(crt) and os.path.exists(key):
            with open(crt, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(key, "rb") as f:
                k = serialization.load_pem_private_key(f.read(), password=None)
            assert isinstance(k, ec.EllipticCurvePrivateKey)
            return cls(cert, k, directory)
        k = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubewire"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"kubewire {cluster} root CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                .sign(k, hashes.SHA256()))
        _write(key, _pem_key(k), 0o600)
        _write(crt, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cls(cert, k, directory)

    def issue(self, hosts: list[str], key: ec.EllipticCurvePrivateKey | None = None,
              validity: datetime.timedelta = VALIDITY) -> Issued:
        """A server certificate for these DNS names (wildcards allowed), signed by the CA."""
        if not hosts:
            raise ValueError("a certificate needs at least one host")
        k = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
                .issuer_name(self.cert.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + validity)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(k))

    def default_key(self) -> ec.EllipticCurvePrivateKey:
        """The default certificate's key, kept across re-issues (the host list changes often)."""
        path = f"{self.dir}/ingress-default.key"
        if os.path.exists(path):
            with open(path, "rb") as f:
                k = serialization.load_pem_private_key(f.read(), password=None)
            assert isinstance(k, ec.EllipticCurvePrivateKey)
            return k
        k = ec.generate_private_key(ec.SECP256R1())
        _write(path, _pem_key(k), 0o600)
        return k


def tls_secret(namespace: str, name: str, issued: Issued, hosts: list[str]) -> dict:
    """A kubernetes.io/tls Secret holding an issued certificate (what cert-manager writes)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {ISSUED_BY_ANNOTATION: ISSUER_NAME,
                                         "cert-manager.io/alt-names": ",".join(hosts)}},
            "data": {"tls.crt": base64.b64encode(issued.cert_pem).decode(),
                     "tls.key": base64.b64encode(issued.key_pem).decode()}}


def wants_issuer(ing: dict) -> bool:
    ann = ing.get("metadata", {}).get("annotations") or {}
    return any(ann.get(a) == ISSUER_NAME for a in ISSUER_ANNOTATIONS)


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
