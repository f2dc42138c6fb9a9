"""Test plumbing for provenance: a test CA with a C2PA-suitable signing certificate, XMP parsing, C2PA reports."""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.runtime.provenance import DC_NS, IPTC_EXT_NS, PONYSERVE_NS, XMP_NS

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ponyserve tests")])


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=signing, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=not signing,
                         crl_sign=not signing, encipher_only=False, decipher_only=False)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class SigningFiles:
    cert_file: Path
    key_file: Path


def write_test_chain(directory: Path, *, expired: bool = False, extended_key_usage: bool = True,
                     authority_key_identifier: bool = True, wrong_key: bool = False) -> SigningFiles:
    """A P-256 (ES256) end-entity certificate issued by a throwaway CA, as c2pa-rs (0.91) wants one: keyUsage
    digitalSignature (critical), EKU emailProtection (its default verification refuses documentSigning),
    an authority key identifier, CA:false. Written as a PEM chain (leaf, then CA) and a PKCS#8 key; the flags
    break one requirement each."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("ponyserve test CA")).issuer_name(_name("ponyserve test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(signing=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    valid_from, valid_to = ((now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired
                            else (now - dt.timedelta(days=1), now + dt.timedelta(days=30)))
    builder = (x509.CertificateBuilder().subject_name(_name("ponyserve signer")).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(valid_from).not_valid_after(valid_to)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(signing=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if authority_key_identifier:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                        critical=False)
    if extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    leaf = builder.sign(ca_key, hashes.SHA256())
    chain = SigningFiles(cert_file=directory / "c2pa-chain.pem", key_file=directory / "c2pa-key.pem")
    chain.cert_file.write_bytes(_pem(leaf) + _pem(ca))
    chain.key_file.write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1()) if wrong_key else key))
    return chain


def xmp_fields(packet: str) -> dict[str, str]:
    """The simple properties of the XMP packet's rdf:Description elements, keyed ``prefix:Name``."""
    prefixes = {IPTC_EXT_NS: "Iptc4xmpExt", XMP_NS: "xmp", DC_NS: "dc", PONYSERVE_NS: "ponyserve"}
    start, end = packet.index("<x:xmpmeta"), packet.index("</x:xmpmeta>") + len("</x:xmpmeta>")
    root = ET.fromstring(packet[start:end])
    fields: dict[str, str] = {}
    for description in root.iter(f"{{{RDF_NS}}}Description"):
        for child in description:
            ns, _, local = child.tag[1:].partition("}")
            fields[f"{prefixes.get(ns, ns)}:{local}"] = child.text or ""
    return fields


@dataclass(frozen=True)
class C2paReport:
    state: str | None
    failures: list[str]
    successes: list[str]
    manifest: dict[str, Any]


def c2pa_report(data: bytes, mime: str) -> C2paReport | None:
    """What c2pa's Reader says about the image; None when it carries no manifest."""
    import c2pa

    reader = c2pa.Reader.try_create(mime, io.BytesIO(data))
    if reader is None:
        return None
    with reader:
        results = reader.get_validation_results() or {}
        active = results.get("activeManifest", {})
        manifest = reader.get_active_manifest() or {}
        return C2paReport(state=reader.get_validation_state(),
                          failures=[f["code"] for f in active.get("failure", [])],
                          successes=[s["code"] for s in active.get("success", [])], manifest=manifest)


def assert_signed_by_ponyserve(report: C2paReport | None, *, model: str, job_id: str | None = None) -> None:
    """A manifest whose signature and hashes validate (the test CA is on no trust list: ``untrusted`` is all
    that may fail), stating ``c2pa.created`` by a trained model, with ponyserve as claim generator."""
    assert report is not None, "no C2PA manifest"
    assert report.state in ("Valid", "Trusted"), report
    assert set(report.failures) <= {"signingCredential.untrusted"}, report.failures
    assert "claimSignature.validated" in report.successes, report.successes
    assert "assertion.dataHash.match" in report.successes, report.successes
    assert [g["name"] for g in report.manifest["claim_generator_info"]] == ["ponyserve"]
    assertions = {a["label"]: a["data"] for a in report.manifest["assertions"]}
    actions = assertions["c2pa.actions.v2"]["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    generation = assertions["dev.ponyserve.generation"]
    assert generation["model"] == model
    if job_id is not None:
        assert generation["job_id"] == job_id
