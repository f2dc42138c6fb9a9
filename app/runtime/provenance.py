"""What an image file says about where it came from: an IPTC/XMP provenance packet and, where the
operator configured a certificate, a C2PA manifest.

Per API key the operator picks a metadata mode (``api_keys.metadata_mode``, copied to each job):

- ``full``: AUTOMATIC1111's ``parameters`` infotext (prompts, seed, sampler…) *and* the XMP packet;
- ``provenance_only``: the XMP packet only, no prompt anywhere in the file;
- ``none``: neither (and no C2PA manifest).

The XMP packet marks the image as made by a trained model (IPTC ``DigitalSourceType``
``trainedAlgorithmicMedia``) and names the model and the job; it never carries prompts. Its bytes
are a function of its inputs only (no timestamps, no ids made up here), so encoding stays
deterministic. A C2PA signature is not deterministic (the manifest has a fresh UUID label).

Nothing here imports torch; ``c2pa`` (a native library) is imported only when a signer is built.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from xml.sax.saxutils import escape

from PIL import Image

from app.runtime.encoding import MEDIA_TYPES, PNG_XMP_KEYWORD, ImageFormat, encode_image

if TYPE_CHECKING:
    import c2pa

MetadataMode = Literal["full", "provenance_only", "none"]
METADATA_MODES: tuple[str, ...] = get_args(MetadataMode)

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
CREATOR_TOOL = "ponyserve"
# ponyserve's own XMP namespace (properties Model, JobId, ImageIndex).
PONYSERVE_NS = "https://ponyserve.dev/ns/xmp/1.0/"
IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
DC_NS = "http://purl.org/dc/elements/1.1/"
# The C2PA assertion with ponyserve's own facts about the image.
C2PA_ASSERTION_LABEL = "dev.ponyserve.generation"

# Characters XML 1.0 cannot carry at all (C0 controls but tab/newline/return, lone surrogates, U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Provenance:
    """The facts an image's provenance metadata states: which model made it, for which job (and which of its n)."""

    model: str
    job_id: str
    index: int = 0

    def xmp(self) -> bytes:
        return provenance_xmp(model=self.model, job_id=self.job_id, index=self.index)


@dataclass(frozen=True)
class ImageMetadata:
    """What one image file carries: the A1111 infotext, the provenance (XMP, and C2PA where configured),
    both or neither."""

    parameters: str | None
    provenance: Provenance | None

    @property
    def xmp(self) -> bytes | None:
        return self.provenance.xmp() if self.provenance is not None else None


def metadata_for(mode: str, *, parameters: str, provenance: Provenance) -> ImageMetadata:
    """The metadata a key's mode allows. A mode this code does not know (only a hand-edited row can hold
    one) gets provenance without prompts: the choice that cannot leak a prompt and still marks the image."""
    if mode == "full":
        return ImageMetadata(parameters=parameters, provenance=provenance)
    if mode == "none":
        return ImageMetadata(parameters=None, provenance=None)
    return ImageMetadata(parameters=None, provenance=provenance)


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def provenance_xmp(*, model: str, job_id: str, index: int = 0) -> bytes:
    """A well-formed XMP packet (UTF-8) stating that a trained model made the image, which model, and for which job.

    IPTC ``Iptc4xmpExt:DigitalSourceType`` = trainedAlgorithmicMedia and ``Iptc4xmpExt:AISystemUsed``
    (IPTC Photo Metadata 2025.1) = the model; ``xmp:CreatorTool`` = ponyserve; ``dc:identifier`` =
    the job id; and ``ponyserve:Model``, ``ponyserve:JobId``, ``ponyserve:ImageIndex``.
    """
    model_text, job_text = _text(model), _text(job_id)
    lines = [
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
        '  <rdf:Description rdf:about=""',
        f'    xmlns:Iptc4xmpExt="{IPTC_EXT_NS}"',
        f'    xmlns:xmp="{XMP_NS}"',
        f'    xmlns:dc="{DC_NS}"',
        f'    xmlns:ponyserve="{PONYSERVE_NS}">',
        f"   <Iptc4xmpExt:DigitalSourceType>{TRAINED_ALGORITHMIC_MEDIA}</Iptc4xmpExt:DigitalSourceType>",
        f"   <Iptc4xmpExt:AISystemUsed>{model_text}</Iptc4xmpExt:AISystemUsed>",
        f"   <xmp:CreatorTool>{CREATOR_TOOL}</xmp:CreatorTool>",
        f"   <dc:identifier>{job_text}</dc:identifier>",
        f"   <ponyserve:Model>{model_text}</ponyserve:Model>",
        f"   <ponyserve:JobId>{job_text}</ponyserve:JobId>",
        f"   <ponyserve:ImageIndex>{int(index)}</ponyserve:ImageIndex>",
        "  </rdf:Description>",
        " </rdf:RDF>",
        "</x:xmpmeta>",
        '<?xpacket end="r"?>',
    ]
    return "\n".join(lines).encode("utf-8")


def read_xmp(data: bytes) -> str | None:
    """The XMP packet embedded in encoded image bytes (PNG iTXt, JPEG APP1, WebP XMP chunk), if any."""
    with Image.open(io.BytesIO(data)) as image:
        packet = image.info.get("xmp", image.info.get(PNG_XMP_KEYWORD))
    if isinstance(packet, bytes):
        return packet.decode("utf-8", errors="replace")
    if isinstance(packet, str):
        return packet
    return None


# -- C2PA ---------------------------------------------------------------------------------------


class SigningUnavailable(RuntimeError):
    """The configured C2PA certificate or key cannot be used: raised at start-up, not per image."""


class SigningFailed(RuntimeError):
    """One image could not be signed (an expired certificate, an unreachable time-stamp authority…)."""


def _algorithm(key_pem: bytes, key_file: Path) -> Any:
    """The C2PA algorithm the private key implies (the key decides, as for any COSE signer)."""
    import c2pa
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningUnavailable(f"c2pa_key_file {key_file} is not an unencrypted PEM private key: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curves = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384,
                  "secp521r1": c2pa.C2paSigningAlg.ES512}
        if key.curve.name not in curves:
            raise SigningUnavailable(f"c2pa_key_file {key_file}: curve {key.curve.name} is not one C2PA signs with "
                                     "(P-256, P-384, P-521)")
        return curves[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    raise SigningUnavailable(f"c2pa_key_file {key_file}: {type(key).__name__} keys cannot sign C2PA manifests")


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningUnavailable(f"{setting} {path} cannot be read: {exc}") from exc


def _version() -> str:
    try:
        return importlib.metadata.version("ponyserve")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _probe_image() -> bytes:
    return encode_image(Image.new("RGB", (8, 8)), "png", None, xmp=provenance_xmp(model="probe", job_id="probe"))


class C2paSigner:
    """Signs encoded images with a C2PA manifest: action ``c2pa.created``, digitalSourceType
    trainedAlgorithmicMedia, claim generator ``ponyserve``, and a ``dev.ponyserve.generation``
    assertion naming the model and the job.

    Built once per worker; ``sign`` is blocking (hashing, and the time-stamp authority's round trip
    when one is configured) and safe to call from several encoding threads at once.
    """

    def __init__(self, signer: c2pa.Signer, context: c2pa.Context, *, version: str) -> None:
        self._signer = signer
        self._context = context
        self._version = version

    @classmethod
    def from_files(cls, cert_file: Path, key_file: Path, tsa_url: str | None = None) -> C2paSigner:
        """Reads the PEM certificate chain (leaf first) and private key and proves they sign.

        Raises ``SigningUnavailable`` when a file cannot be read, the key is of no C2PA algorithm, or a
        probe signature fails (c2pa-rs refuses, e.g., a self-signed leaf, a leaf without the
        digitalSignature key usage or without an emailProtection/documentSigning extended key usage,
        an expired certificate, a key that is not the certificate's). The probe does not use the
        time-stamp authority, so a TSA outage at start-up does not stop the worker; it fails images.
        """
        import c2pa

        chain, key_pem = _read(cert_file, "c2pa_cert_file"), _read(key_file, "c2pa_key_file")
        alg = _algorithm(key_pem, key_file)
        try:
            # Thumbnails would add ~30 KB per image (a JPEG copy inside the manifest) for nothing a partner asked for.
            context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
            probe = cls(c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key_pem, None)), context,
                        version=_version())
            probe.sign(_probe_image(), "png", Provenance(model="probe", job_id="probe"))
            if tsa_url is None:
                return probe
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key_pem, tsa_url.encode("utf-8")))
        except (SigningFailed, c2pa.C2paError, ValueError, TypeError) as exc:
            raise SigningUnavailable(f"c2pa_cert_file {cert_file} / c2pa_key_file {key_file} cannot sign: "
                                     f"{exc}") from exc
        return cls(signer, context, version=_version())

    def manifest(self, provenance: Provenance) -> dict[str, Any]:
        return {
            "claim_generator_info": [{"name": CREATOR_TOOL, "version": self._version}],
            "title": f"{provenance.job_id}-{provenance.index}",
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created",
                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                    "softwareAgent": {"name": CREATOR_TOOL, "version": self._version},
                }]}},
                {"label": C2PA_ASSERTION_LABEL, "data": {"model": provenance.model, "job_id": provenance.job_id,
                                                         "index": provenance.index}},
            ],
        }

    def sign(self, data: bytes, fmt: ImageFormat, provenance: Provenance) -> bytes:
        """``data`` (an encoded ``fmt`` image) with a C2PA manifest embedded; ``SigningFailed`` if it cannot be."""
        import c2pa

        try:
            with c2pa.Builder(json.dumps(self.manifest(provenance)), self._context) as builder:
                signed = io.BytesIO()
                builder.sign(self._signer, MEDIA_TYPES[fmt], io.BytesIO(data), signed)
                return signed.getvalue()
        except Exception as exc:
            raise SigningFailed(f"C2PA signing failed: {exc}") from exc

