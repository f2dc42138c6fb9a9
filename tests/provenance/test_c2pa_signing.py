"""C2PA signing with c2pa-python: a test CA's certificate signs; c2pa's Reader validates what it signed."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import pytest
from PIL import Image
from provenance_helpers import SigningFiles, assert_signed_by_ponyserve, c2pa_report, write_test_chain, xmp_fields

from app.runtime.encoding import MEDIA_TYPES, a1111_parameters, encode_image, read_parameters
from app.runtime.provenance import C2paSigner, Provenance, SigningFailed, SigningUnavailable, read_xmp

PARAMETERS = a1111_parameters(prompt="a pony", negative_prompt="", steps=2, sampler="Euler a", guidance_scale=7,
                              seed=1, width=32, height=32, model="demo")
PROVENANCE = Provenance(model="demo", job_id="job_c2pa", index=0)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> SigningFiles:
    return write_test_chain(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture(scope="module")
def signer(chain: SigningFiles) -> C2paSigner:
    return C2paSigner.from_files(chain.cert_file, chain.key_file)


def _encoded(fmt: str) -> bytes:
    image = Image.linear_gradient("L").resize((32, 32)).convert("RGB")
    return encode_image(image, fmt, PARAMETERS, xmp=PROVENANCE.xmp())  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_signed_image_validates_and_keeps_its_other_metadata(signer: C2paSigner, fmt: str) -> None:
    signed = signer.sign(_encoded(fmt), fmt, PROVENANCE)  # type: ignore[arg-type]
    assert_signed_by_ponyserve(c2pa_report(signed, MEDIA_TYPES[fmt]), model="demo", job_id="job_c2pa")
    assert read_parameters(signed) == PARAMETERS
    packet = read_xmp(signed)
    assert packet is not None and xmp_fields(packet)["ponyserve:JobId"] == "job_c2pa"
    with Image.open(io.BytesIO(signed)) as image:
        image.load()
        assert image.size == (32, 32)


def test_an_altered_image_fails_its_hash(signer: C2paSigner) -> None:
    signed = bytearray(signer.sign(_encoded("png"), "png", PROVENANCE))
    pixels = signed.index(b"IDAT") + 8
    signed[pixels] ^= 0xFF
    report = c2pa_report(bytes(signed), "image/png")
    assert report is not None
    assert "assertion.dataHash.mismatch" in report.failures
    assert report.state == "Invalid"


def test_unsigned_image_has_no_manifest() -> None:
    assert c2pa_report(_encoded("png"), "image/png") is None


def test_signing_from_several_threads_at_once(signer: C2paSigner) -> None:
    errors: list[BaseException] = []

    def sign_some() -> None:
        try:
            for _ in range(4):
                signed = signer.sign(_encoded("jpeg"), "jpeg", PROVENANCE)
                assert_signed_by_ponyserve(c2pa_report(signed, "image/jpeg"), model="demo")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sign_some) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("flaw", [{"expired": True}, {"extended_key_usage": False},
                                  {"authority_key_identifier": False}, {"wrong_key": True}], ids=str)
def test_credentials_c2pa_would_refuse_fail_at_start_up(tmp_path: Path, flaw: dict[str, bool]) -> None:
    broken = write_test_chain(tmp_path, **flaw)
    with pytest.raises(SigningUnavailable, match="cannot sign"):
        C2paSigner.from_files(broken.cert_file, broken.key_file)


def test_unreadable_files_fail_at_start_up(tmp_path: Path, chain: SigningFiles) -> None:
    with pytest.raises(SigningUnavailable, match=r"c2pa_cert_file .* cannot be read"):
        C2paSigner.from_files(tmp_path / "missing.pem", chain.key_file)
    with pytest.raises(SigningUnavailable, match=r"c2pa_key_file .* cannot be read"):
        C2paSigner.from_files(chain.cert_file, tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(SigningUnavailable, match="not an unencrypted PEM private key"):
        C2paSigner.from_files(chain.cert_file, garbage)


def test_an_unreachable_time_stamp_authority_fails_images_not_start_up(chain: SigningFiles) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    signer = C2paSigner.from_files(chain.cert_file, chain.key_file, f"http://127.0.0.1:{port}/tsa")
    with pytest.raises(SigningFailed):
        signer.sign(_encoded("png"), "png", PROVENANCE)
