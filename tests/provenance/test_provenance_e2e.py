"""Per-key metadata modes and C2PA signing through a live server: admin API, queue, worker, storage, signed URL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    Customer,
    LiveServer,
    bootstrap_admin,
    make_settings,
    start_server,
    wait_jobs_finished,
)
from provenance_helpers import assert_signed_by_ponyserve, c2pa_report, write_test_chain, xmp_fields
from sqlalchemy import create_engine, text

from app.config import Settings
from app.db import sync_url
from app.runtime.encoding import MEDIA_TYPES, read_parameters
from app.runtime.provenance import TRAINED_ALGORITHMIC_MEDIA, C2paSigner, SigningFailed, SigningUnavailable, read_xmp
from app.worker.worker import QueueWorker

FORMATS = ["png", "jpeg", "webp"]
PROMPT_WORD = "marigoldpie"
NEGATIVE_WORD = "cloudyhaze"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _customer(client: httpx.Client, admin_key: str, metadata: str | None = None) -> Customer:
    acct = client.post("/admin/accounts", json={"name": f"prov-{secrets.token_hex(3)}", "plan": "internal"},
                       headers=_auth(admin_key))
    assert acct.status_code == 201, acct.text
    body: dict[str, object] = {"name": "prov", "scopes": ["generate"]}
    if metadata is not None:
        body["metadata"] = metadata
    key = client.post(f"/admin/accounts/{acct.json()['id']}/keys", json=body, headers=_auth(admin_key))
    assert key.status_code == 201, key.text
    assert key.json()["metadata"] == (metadata or "full")
    return Customer(account_id=acct.json()["id"], key=key.json()["key"], key_id=key.json()["id"])


@dataclass(frozen=True)
class Made:
    job_id: str
    data: bytes


def _make(client: httpx.Client, customer: Customer, fmt: str) -> Made:
    r = client.post("/v1/images/generations", headers=customer.headers, json={
        "prompt": f"a pony eating {PROMPT_WORD}", "negative_prompt": NEGATIVE_WORD, "size": "64x64", "steps": 2,
        "response_format": "url", "output_format": fmt, "seed": 5,
    })
    assert r.status_code == 200, r.text
    fetched = httpx.get(r.json()["data"][0]["url"])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == MEDIA_TYPES[fmt]
    return Made(job_id=r.json()["id"], data=fetched.content)


def _prompt_traces(data: bytes) -> list[str]:
    words = [PROMPT_WORD, NEGATIVE_WORD, "score_9", "Negative prompt", "Steps: 2"]
    return [w for w in words for enc in ("utf-8", "utf-16-be") if w.encode(enc) in data]


def _assert_provenance(made: Made) -> None:
    packet = read_xmp(made.data)
    assert packet is not None
    fields = xmp_fields(packet)
    assert fields["Iptc4xmpExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert fields["ponyserve:Model"] == fields["Iptc4xmpExt:AISystemUsed"] == "demo"
    assert fields["ponyserve:JobId"] == fields["dc:identifier"] == made.job_id


# -- the admin API -------------------------------------------------------------------------------


def test_key_metadata_mode_is_set_shown_and_changed_by_admins(client: httpx.Client, admin_key: str) -> None:
    admin = _auth(admin_key)
    default = _customer(client, admin_key)
    chosen = _customer(client, admin_key, "provenance_only")
    listed = client.get(f"/admin/accounts/{chosen.account_id}/keys", headers=admin)
    assert [k["metadata"] for k in listed.json()] == ["provenance_only"]

    r = client.patch(f"/admin/keys/{default.key_id}", json={"metadata": "none"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == "none" and r.json()["id"] == default.key_id
    assert client.patch(f"/admin/keys/{default.key_id}", json={}, headers=admin).json()["metadata"] == "none"
    listed = client.get(f"/admin/accounts/{default.account_id}/keys", headers=admin)
    assert [k["metadata"] for k in listed.json()] == ["none"]

    for bad in ({"metadata": "everything"}, {"metadata": None}, {"metadata": 1}, {"name": "x"}):
        r = client.patch(f"/admin/keys/{default.key_id}", json=bad, headers=admin)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error", r.text
    r = client.post(f"/admin/accounts/{default.account_id}/keys", json={"metadata": "all"}, headers=admin)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "metadata", r.text

    r = client.patch("/admin/keys/key_doesnotexist", json={"metadata": "none"}, headers=admin)
    assert r.status_code == 404
    assert set(r.json()["error"]) >= {"type", "code", "message"}
    r = client.patch(f"/admin/keys/{default.key_id}", json={"metadata": "full"}, headers=default.headers)
    assert r.status_code == 403


# -- images through the plain server (no C2PA) ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_carry_what_their_keys_mode_allows(client: httpx.Client, admin_key: str, fmt: str) -> None:
    full = _make(client, _customer(client, admin_key, "full"), fmt)
    _assert_provenance(full)
    parameters = read_parameters(full.data)
    assert parameters is not None and PROMPT_WORD in parameters and f"Negative prompt: {NEGATIVE_WORD}" in parameters
    assert c2pa_report(full.data, MEDIA_TYPES[fmt]) is None  # no certificate configured

    private = _make(client, _customer(client, admin_key, "provenance_only"), fmt)
    _assert_provenance(private)
    assert read_parameters(private.data) is None
    assert _prompt_traces(private.data) == []

    bare = _make(client, _customer(client, admin_key, "none"), fmt)
    assert read_parameters(bare.data) is None
    assert read_xmp(bare.data) is None
    assert _prompt_traces(bare.data) == []
    assert b"trainedAlgorithmicMedia" not in bare.data


def test_a_changed_mode_applies_to_the_next_jobs(client: httpx.Client, admin_key: str) -> None:
    customer = _customer(client, admin_key)
    assert read_parameters(_make(client, customer, "png").data) is not None
    r = client.patch(f"/admin/keys/{customer.key_id}", json={"metadata": "provenance_only"}, headers=_auth(admin_key))
    assert r.status_code == 200, r.text
    after = _make(client, customer, "png")
    assert read_parameters(after.data) is None
    _assert_provenance(after)


# -- a server with C2PA configured ------------------------------------------------------------------


@dataclass
class SigningServer:
    server: LiveServer
    admin_key: str
    database_url: str


@pytest.fixture(scope="module")
def signing(pg_factory, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
            ) -> Iterator[SigningServer]:
    chain = write_test_chain(tmp_path_factory.mktemp("c2pa-certs"))
    url = pg_factory()
    settings = make_settings(url, tmp_path_factory.mktemp("c2pa-var"), demo_model_dir,
                             c2pa_cert_file=chain.cert_file, c2pa_key_file=chain.key_file)
    server = start_server(settings)
    try:
        yield SigningServer(server=server, admin_key=bootstrap_admin(settings), database_url=url)
    finally:
        server.stop()


@pytest.fixture
def signing_client(signing: SigningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=signing.server.url, timeout=120) as c:
        yield c


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_are_c2pa_signed_where_the_mode_keeps_provenance(signing: SigningServer, signing_client: httpx.Client,
                                                                fmt: str) -> None:
    full = _make(signing_client, _customer(signing_client, signing.admin_key, "full"), fmt)
    assert_signed_by_ponyserve(c2pa_report(full.data, MEDIA_TYPES[fmt]), model="demo", job_id=full.job_id)
    _assert_provenance(full)
    assert read_parameters(full.data) is not None

    private = _make(signing_client, _customer(signing_client, signing.admin_key, "provenance_only"), fmt)
    assert_signed_by_ponyserve(c2pa_report(private.data, MEDIA_TYPES[fmt]), model="demo", job_id=private.job_id)
    _assert_provenance(private)
    assert read_parameters(private.data) is None
    assert _prompt_traces(private.data) == []

    bare = _make(signing_client, _customer(signing_client, signing.admin_key, "none"), fmt)
    assert c2pa_report(bare.data, MEDIA_TYPES[fmt]) is None
    assert read_xmp(bare.data) is None and read_parameters(bare.data) is None


def test_an_image_that_cannot_be_signed_fails_its_job_uncharged(signing: SigningServer, signing_client: httpx.Client,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: C2paSigner, data: bytes, fmt: str, provenance: object) -> bytes:
        raise SigningFailed("C2PA signing failed: the time-stamp authority is away (injected)")

    # The embedded worker runs in this process: its signer now refuses.
    monkeypatch.setattr(C2paSigner, "sign", refuse)
    customer = _customer(signing_client, signing.admin_key, "provenance_only")
    r = signing_client.post("/v1/generations", headers=customer.headers,
                            json={"prompt": "a pony", "size": "64x64", "steps": 2, "n": 2})
    assert r.status_code == 202, r.text
    (job,) = wait_jobs_finished(signing_client, customer.headers, [r.json()["id"]])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "signing_failed", job  # type: ignore[index]
    assert job["outputs"] == []
    assert job["usage"]["images"] == 0  # type: ignore[index]
    engine = create_engine(sync_url(signing.database_url))
    try:
        with engine.connect() as conn:
            ledger = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"), {"j": job["id"]})
            assert ledger.scalar_one() == 0
    finally:
        engine.dispose()
    # A key whose images carry no provenance is not signed, so it is unaffected.
    bare = _make(signing_client, _customer(signing_client, signing.admin_key, "none"), "png")
    assert c2pa_report(bare.data, "image/png") is None


def _worker(settings: Settings) -> QueueWorker:
    # Construction touches neither the database nor the other collaborators.
    stub: Any = None
    return QueueWorker(stub, settings, stub, stub, stub)


def test_a_worker_builds_its_signer_at_start_up_and_refuses_to_start_without_one(pg_url: str, demo_model_dir: Path,
                                                                                  tmp_path: Path) -> None:
    chain = write_test_chain(tmp_path / "certs")
    assert _worker(make_settings(pg_url, tmp_path, demo_model_dir)).c2pa is None
    configured = make_settings(pg_url, tmp_path, demo_model_dir, c2pa_cert_file=chain.cert_file,
                               c2pa_key_file=chain.key_file)
    assert isinstance(_worker(configured).c2pa, C2paSigner)
    unreadable = make_settings(pg_url, tmp_path, demo_model_dir, c2pa_cert_file=tmp_path / "missing.pem",
                               c2pa_key_file=chain.key_file)
    with pytest.raises(SigningUnavailable, match=r"c2pa_cert_file .*missing\.pem cannot be read"):
        _worker(unreadable)
    mismatched = write_test_chain(tmp_path / "mismatched", wrong_key=True)
    with pytest.raises(SigningUnavailable, match="cannot sign"):
        _worker(make_settings(pg_url, tmp_path, demo_model_dir, c2pa_cert_file=mismatched.cert_file,
                              c2pa_key_file=mismatched.key_file))
