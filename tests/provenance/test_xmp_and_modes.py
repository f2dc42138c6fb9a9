"""The provenance XMP packet in every format, and what each metadata mode leaves in the file."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image
from provenance_helpers import xmp_fields

from app.runtime.encoding import a1111_parameters, encode_image, read_parameters
from app.runtime.provenance import (
    METADATA_MODES,
    TRAINED_ALGORITHMIC_MEDIA,
    ImageMetadata,
    Provenance,
    metadata_for,
    provenance_xmp,
    read_xmp,
)

FORMATS = ["png", "jpeg", "webp"]
PROMPT = "score_9, a secret pony prompt"
NEGATIVE = "blurry secret negative"
PARAMETERS = a1111_parameters(prompt=PROMPT, negative_prompt=NEGATIVE, steps=2, sampler="Euler a",
                              guidance_scale=7, seed=42, width=32, height=32, model="pony-v6")
PROVENANCE = Provenance(model="pony-v6", job_id="job_01ABC", index=1)


def _image() -> Image.Image:
    return Image.linear_gradient("L").resize((32, 32)).convert("RGB")


def _encode(fmt: str, mode: str) -> bytes:
    metadata = metadata_for(mode, parameters=PARAMETERS, provenance=PROVENANCE)
    return encode_image(_image(), fmt, metadata.parameters, xmp=metadata.xmp)  # type: ignore[arg-type]


def test_packet_is_well_formed_escaped_and_deterministic() -> None:
    packet = provenance_xmp(model='m<odel> & "co"\x01', job_id="job_<1>", index=3)
    assert packet == provenance_xmp(model='m<odel> & "co"\x01', job_id="job_<1>", index=3)
    text = packet.decode("utf-8")
    assert text.startswith('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>')
    assert text.endswith('<?xpacket end="r"?>')
    fields = xmp_fields(text)
    assert fields == {
        "Iptc4xmpExt:DigitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
        "Iptc4xmpExt:AISystemUsed": 'm<odel> & "co"\ufffd',
        "xmp:CreatorTool": "ponyserve",
        "dc:identifier": "job_<1>",
        "ponyserve:Model": 'm<odel> & "co"\ufffd',
        "ponyserve:JobId": "job_<1>",
        "ponyserve:ImageIndex": "3",
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_mode_carries_infotext_and_xmp(fmt: str) -> None:
    data = _encode(fmt, "full")
    assert read_parameters(data) == PARAMETERS
    packet = read_xmp(data)
    assert packet is not None
    fields = xmp_fields(packet)
    assert fields["Iptc4xmpExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert fields["ponyserve:Model"] == "pony-v6"
    assert fields["dc:identifier"] == fields["ponyserve:JobId"] == "job_01ABC"
    assert fields["ponyserve:ImageIndex"] == "1"
    # No prompt inside the XMP itself, whatever the mode.
    assert "secret" not in packet
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.size == (32, 32)


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoding_with_xmp_is_deterministic(fmt: str) -> None:
    assert _encode(fmt, "full") == _encode(fmt, "full")
    assert _encode(fmt, "provenance_only") == _encode(fmt, "provenance_only")


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def test_png_xmp_is_an_uncompressed_itxt_chunk_before_the_pixels() -> None:
    chunks = _png_chunks(_encode("png", "provenance_only"))
    kinds = [kind for kind, _ in chunks]
    itxt = [body for kind, body in chunks if kind == b"iTXt"]
    assert len(itxt) == 1
    # keyword \0, compression flag 0, method 0, empty language \0, empty translated keyword \0, text
    assert itxt[0].startswith(b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<?xpacket")
    assert kinds.index(b"iTXt") < kinds.index(b"IDAT")


def test_jpeg_xmp_is_an_app1_segment_with_the_adobe_header() -> None:
    data = _encode("jpeg", "provenance_only")
    marker = b"\xff\xe1" + struct.pack(">H", 2 + len(b"http://ns.adobe.com/xap/1.0/\x00") + len(PROVENANCE.xmp()))
    assert marker + b"http://ns.adobe.com/xap/1.0/\x00<?xpacket" in data


def test_webp_xmp_is_an_xmp_chunk_announced_in_vp8x() -> None:
    data = _encode("webp", "provenance_only")
    assert data[12:16] == b"VP8X"
    assert data[20] & 0x04  # the XMP flag
    assert b"XMP " + struct.pack("<I", len(PROVENANCE.xmp())) + PROVENANCE.xmp() in data


def _prompt_traces(data: bytes) -> list[str]:
    needles = [PROMPT, NEGATIVE, "secret", "Negative prompt", "Steps: 2", "Seed: 42"]
    return [n for n in needles for enc in ("utf-8", "utf-16-be", "utf-16-le") if n.encode(enc) in data]


@pytest.mark.parametrize("fmt", FORMATS)
def test_provenance_only_carries_xmp_and_no_prompt_anywhere(fmt: str) -> None:
    data = _encode(fmt, "provenance_only")
    assert read_parameters(data) is None
    packet = read_xmp(data)
    assert packet is not None
    assert xmp_fields(packet)["Iptc4xmpExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert _prompt_traces(data) == []
    # and the full mode, for contrast, does carry them (the search above can find them)
    assert _prompt_traces(_encode(fmt, "full"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_none_carries_neither(fmt: str) -> None:
    data = _encode(fmt, "none")
    assert read_parameters(data) is None
    assert read_xmp(data) is None
    assert _prompt_traces(data) == []
    assert b"xpacket" not in data and b"trainedAlgorithmicMedia" not in data
    assert data == encode_image(_image(), fmt, None)  # type: ignore[arg-type]


def test_modes() -> None:
    assert METADATA_MODES == ("full", "provenance_only", "none")
    assert metadata_for("full", parameters="p", provenance=PROVENANCE) == ImageMetadata("p", PROVENANCE)
    assert metadata_for("provenance_only", parameters="p", provenance=PROVENANCE) == ImageMetadata(None, PROVENANCE)
    assert metadata_for("none", parameters="p", provenance=PROVENANCE) == ImageMetadata(None, None)
    # A value only a hand-edited row could hold: never prompts, still marked.
    assert metadata_for("FULL?", parameters="p", provenance=PROVENANCE) == ImageMetadata(None, PROVENANCE)


def test_read_xmp_of_an_image_without_one() -> None:
    assert read_xmp(encode_image(_image(), "png", PARAMETERS)) is None
