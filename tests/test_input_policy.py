"""Hand-made malformed requests, one per class of input that used to end in a 5xx or a wrong status.

Each asserts the clear JSON error DESIGN promises (400/413/422 with a named field), never a 500.
The schemathesis run (test_fuzz_openapi.py) finds these classes by chance; these pin them down.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import Customer, LiveServer, bootstrap_admin, make_settings, new_customer, start_server

from app.kit.bounds import INT32_MAX, INT64_MAX


@pytest.fixture(scope="module")
def server(pg_factory, demo_model_dir: Path,  # type: ignore[no-untyped-def]
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # No worker: every request here must be refused before anything is queued.
    settings = make_settings(pg_factory(), tmp_path_factory.mktemp("policy-var"), demo_model_dir, max_wait_seconds=1.0)
    live = start_server(settings, embedded_worker=False)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {bootstrap_admin(server.settings)}"}


@pytest.fixture(scope="module")
def partner(http: httpx.Client, admin: dict[str, str]) -> Customer:
    return new_customer(http, admin["Authorization"].removeprefix("Bearer "))


def _error(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, object] = response.json()["error"]
    if param is not None:
        assert error["param"] == param, error
    return error


# -- control characters ---------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["prompt", "negative_prompt", "user", "sampler", "model"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f"])
def test_control_characters_in_generation_fields_are_400(http: httpx.Client, partner: Customer, field: str,
                                                         char: str) -> None:
    body = {"prompt": "a pony", field: f"x{char}y"}
    error = _error(http.post("/v1/generations", json=body, headers=partner.headers), 400, param=field)
    assert "control character" in str(error["message"])


def test_tab_newline_and_return_are_text(http: httpx.Client, partner: Customer) -> None:
    body = {"prompt": "a pony\n\tin a meadow\r\n", "model": "no-such-model"}
    # Past the text policy: refused for the unknown model, not for the whitespace.
    error = _error(http.post("/v1/generations", json=body, headers=partner.headers), 400)
    assert error["param"] != "prompt"


def test_control_characters_in_admin_names_are_400(http: httpx.Client, admin: dict[str, str]) -> None:
    _error(http.post("/admin/accounts", json={"name": "a\x00b"}, headers=admin), 400, param="name")
    _error(http.post("/admin/plans", json={"code": "p1", "name": "n\x00", "allowed_models": ["m\x00"]},
                     headers=admin), 400)


def test_control_characters_in_a1111_bodies_are_400(http: httpx.Client, partner: Customer) -> None:
    _error(http.post("/sdapi/v1/txt2img", json={"prompt": "a\x00"}, headers=partner.headers), 400, param="prompt")
    # Unknown keys are echoed in X-Ignored-Fields: a control character there must not reach a header.
    _error(http.post("/sdapi/v1/txt2img", json={"prompt": "a", "x\x00": 1}, headers=partner.headers), 400)


@pytest.mark.parametrize("path", ["/v1/generations/gen_%00", "/admin/accounts/acc_%01x", "/v1/generations/%1b[31m"])
def test_control_characters_in_the_path_are_400(http: httpx.Client, admin: dict[str, str], path: str) -> None:
    _error(http.get(path, headers=admin), 400, param="path")


def test_control_characters_in_the_query_are_400(http: httpx.Client, admin: dict[str, str]) -> None:
    _error(http.get("/admin/billing/outbox?account_id=acc_%00", headers=admin), 400, param="query")


# -- integers beyond their column -----------------------------------------------------------------

def test_account_override_beyond_integer_column_is_400(http: httpx.Client, admin: dict[str, str],
                                                       partner: Customer) -> None:
    body = {"limit_overrides": {"monthly_image_quota": 2**40}}
    _error(http.patch(f"/admin/accounts/{partner.account_id}", json=body, headers=admin), 400,
           param="limit_overrides.monthly_image_quota")
    ok = http.patch(f"/admin/accounts/{partner.account_id}",
                    json={"limit_overrides": {"monthly_image_quota": INT32_MAX}}, headers=admin)
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("field", ["max_n", "priority", "monthly_image_quota", "requests_per_minute"])
def test_plan_limit_beyond_integer_column_is_400(http: httpx.Client, admin: dict[str, str], field: str) -> None:
    body = {"code": "huge", "name": "huge", field: INT32_MAX + 1}
    _error(http.post("/admin/plans", json=body, headers=admin), 400, param=field)


def test_key_override_and_licence_cap_beyond_column_are_400(http: httpx.Client, admin: dict[str, str],
                                                            partner: Customer) -> None:
    body = {"name": "k", "limit_overrides": {"max_queued_jobs": 2**31}}
    _error(http.post(f"/admin/accounts/{partner.account_id}/keys", json=body, headers=admin), 400)
    licence = {"id": "lic", "name": "Licence", "monthly_image_cap": 2**40}
    _error(http.post("/admin/licenses", json=licence, headers=admin), 400, param="monthly_image_cap")


def test_pagination_beyond_bigint_is_400(http: httpx.Client, admin: dict[str, str]) -> None:
    _error(http.get(f"/admin/accounts?offset={INT64_MAX + 1}", headers=admin), 400, param="offset")
    assert http.get(f"/admin/accounts?offset={INT64_MAX}", headers=admin).json()["data"] == []


def test_any_request_integer_beyond_64_bits_is_400(http: httpx.Client, partner: Customer) -> None:
    _error(http.post("/sdapi/v1/txt2img", json={"prompt": "a", "seed": 2**70}, headers=partner.headers), 400,
           param="seed")


# -- PATCH null -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["name", "plan", "status", "max_rating", "review_threshold"])
def test_patch_null_for_a_non_nullable_account_field_is_400(http: httpx.Client, admin: dict[str, str],
                                                            partner: Customer, field: str) -> None:
    _error(http.patch(f"/admin/accounts/{partner.account_id}", json={field: None}, headers=admin), 400, param=field)


def test_patch_null_limit_overrides_clears_them(http: httpx.Client, admin: dict[str, str], partner: Customer) -> None:
    url = f"/admin/accounts/{partner.account_id}"
    assert http.patch(url, json={"limit_overrides": {"max_n": 2}}, headers=admin).json()["limit_overrides"] == {
        "max_n": 2}
    cleared = http.patch(url, json={"limit_overrides": None}, headers=admin)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["limit_overrides"] == {}


@pytest.mark.parametrize("field", ["name", "max_width", "max_n", "priority", "is_paid"])
def test_patch_null_for_a_non_nullable_plan_field_is_400(http: httpx.Client, admin: dict[str, str],
                                                         field: str) -> None:
    _error(http.patch("/admin/plans/free", json={field: None}, headers=admin), 400, param=field)


def test_patch_null_for_a_nullable_plan_field_means_unlimited(http: httpx.Client, admin: dict[str, str]) -> None:
    created = http.post("/admin/plans", json={"code": "nullable", "name": "n", "daily_image_quota": 5}, headers=admin)
    assert created.status_code == 201, created.text
    patched = http.patch("/admin/plans/nullable", json={"daily_image_quota": None}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["daily_image_quota"] is None


# -- model-dependent and strict values --------------------------------------------------------------

def test_clip_skip_deeper_than_the_text_encoder_is_400(http: httpx.Client, partner: Customer) -> None:
    # The demo model's text encoders have 4 layers.
    body = {"prompt": "a pony", "clip_skip": 5}
    error = _error(http.post("/v1/generations", json=body, headers=partner.headers), 400, param="clip_skip")
    assert error["code"] == "invalid_clip_skip"
    _error(http.post("/v1/generations", json={"prompt": "a", "clip_skip": 13}, headers=partner.headers), 400,
           param="clip_skip")


@pytest.mark.parametrize(("field", "value"), [("steps", True), ("n", True), ("seed", "42"), ("guidance_scale", False)])
def test_numbers_are_strict(http: httpx.Client, partner: Customer, field: str, value: object) -> None:
    body = {"prompt": "a pony", field: value}
    _error(http.post("/v1/generations", json=body, headers=partner.headers), 400, param=field)


# -- transport ------------------------------------------------------------------------------------

def test_chunked_body_over_the_cap_is_413(http: httpx.Client, partner: Customer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(160):  # 10 MB in 64 KiB chunks, no Content-Length
            yield b"a" * 65536
        yield b'"}'

    # A route without images (64 KiB); image routes have their own, larger cap (test_bad_input).
    response = http.post("/sdapi/v1/txt2img", content=chunks(),
                         headers={**partner.headers, "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    error = _error(response, 413)
    assert error["code"] == "payload_too_large"


def test_405_allow_lists_every_method_of_the_path(http: httpx.Client, admin: dict[str, str],
                                                  partner: Customer) -> None:
    response = http.put(f"/admin/accounts/{partner.account_id}", json={}, headers=admin)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "PATCH"}
    plans = http.delete("/admin/plans", headers=admin)
    assert {m.strip() for m in plans.headers["allow"].split(",")} == {"GET", "POST"}


def test_405_allow_prefers_the_concrete_path(http: httpx.Client, partner: Customer) -> None:
    # /v1/images/{image_id} matches this path's pattern too; OpenAPI (and the document) say it is POST only.
    response = http.options("/v1/images/generations", headers=partner.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_decimal_beyond_its_numeric_column_is_400(http: httpx.Client, admin: dict[str, str]) -> None:
    licence = {"id": "lic-rev", "name": "Licence", "annual_revenue_cap_usd": 2.5971146077887556e223}
    _error(http.post("/admin/licenses", json=licence, headers=admin), 400, param="annual_revenue_cap_usd")
    _error(http.post("/admin/revenue", json={"amount_usd": 1e15}, headers=admin), 400, param="amount_usd")


def test_revenue_needs_its_amount_and_an_existing_account(http: httpx.Client, admin: dict[str, str]) -> None:
    _error(http.post("/admin/revenue", json={}, headers=admin), 400, param="amount_usd")
    _error(http.post("/admin/revenue", json={"amount_usd": 5, "account_id": "acc_nope"}, headers=admin), 400,
           param="account_id")
