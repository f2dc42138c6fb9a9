"""LoRAs per request on the native API: the demo LoRA (kohya layout) loaded through the real loading path."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from harness import new_customer
from lora_deploy import LoraDeployment
from PIL import Image

SMALL = {"prompt": "a pony in a meadow", "size": "64x64", "steps": 2, "response_format": "b64_json", "seed": 21}


def _pixels(body: dict) -> np.ndarray:  # type: ignore[type-arg]
    data = base64.b64decode(body["data"][0]["b64_json"])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _generate(client: httpx.Client, headers: dict[str, str], **body: object) -> httpx.Response:
    return client.post("/v1/images/generations", headers=headers, json={**SMALL, **body})


def test_a_lora_at_weight_one_changes_the_image_and_at_zero_does_not(lora_deploy: LoraDeployment,
                                                                      lclient: httpx.Client) -> None:
    me = new_customer(lclient, lora_deploy.admin_key)
    plain = _generate(lclient, me.headers)
    styled = _generate(lclient, me.headers, loras=[{"name": "demo-style", "weight": 1.0}])
    off = _generate(lclient, me.headers, loras=[{"name": "demo-style", "weight": 0.0}])
    again = _generate(lclient, me.headers, loras=[{"name": "demo-style"}])  # default_weight 1.0
    back = _generate(lclient, me.headers)  # switching the set off again leaves no trace
    for r in (plain, styled, off, again, back):
        assert r.status_code == 200, r.text
    base = _pixels(plain.json())
    assert np.abs(_pixels(styled.json()) - base).mean() > 5
    assert np.abs(_pixels(off.json()) - base).max() <= 2
    assert np.abs(_pixels(again.json()) - _pixels(styled.json())).max() <= 2
    assert np.abs(_pixels(back.json()) - base).max() <= 2

    job = lclient.get(f"/v1/generations/{styled.json()['id']}", headers=me.headers).json()
    assert job["parameters"]["loras"] == [{"name": "demo-style", "weight": 1.0, "text_encoder_weight": 1.0}]
    image = Image.open(io.BytesIO(base64.b64decode(styled.json()["data"][0]["b64_json"])))
    assert "<lora:demo-style:1>" in image.text["parameters"].splitlines()[0]


def test_loras_are_listed_with_what_a_caller_needs(lora_deploy: LoraDeployment, lclient: httpx.Client) -> None:
    me = new_customer(lclient, lora_deploy.admin_key)
    listed = lclient.get("/v1/loras", headers=me.headers)
    assert listed.status_code == 200, listed.text
    by_name = {item["id"]: item for item in listed.json()["data"]}
    assert by_name["demo-style"] == {"id": "demo-style", "object": "lora", "family": "sdxl", "default_weight": 1.0,
                                     "trigger_words": ["demostyle"], "license": "open",
                                     "description": "The demo LoRA"}
    assert by_name["sd3-thing"]["family"] == "sd3"
    assert "hobby-only" in by_name  # a free plan may use it


def test_bad_lora_requests_are_clear_errors(lora_deploy: LoraDeployment, lclient: httpx.Client) -> None:
    me = new_customer(lclient, lora_deploy.admin_key)
    cases = [
        ([{"name": "nope"}], 400, "unknown_lora"),
        ([{"name": "sd3-thing"}], 400, "incompatible_lora"),
        ([{"name": "demo-style"}, {"name": "demo-style", "weight": 0.5}], 400, "duplicate_lora"),
        ([{"name": "demo-style", "weight": 9}], 400, None),
        ([{"name": x} for x in ("demo-style", "hobby-only", "sd3-thing", "nope", "nope2")], 400, "too_many_loras"),
    ]
    for loras, status, code in cases:
        r = _generate(lclient, me.headers, loras=loras)
        assert r.status_code == status, (loras, r.text)
        error = r.json()["error"]
        assert error["param"].startswith("loras"), error
        if code is not None:
            assert error["code"] == code, error
    assert "nope" in _generate(lclient, me.headers, loras=[{"name": "nope"}]).json()["error"]["message"]
    blocked = _generate(lclient, me.headers, loras=[{"name": "edgy"}])
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_policy_violation"


def test_a_lora_licence_is_enforced_like_a_models(lora_deploy: LoraDeployment, lclient: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {lora_deploy.admin_key}"}
    plan = lclient.post("/admin/plans", headers=admin, json={"code": "lora-paid", "name": "Paid", "is_paid": True})
    assert plan.status_code == 201, plan.text
    assert plan.json()["max_loras"] == 4
    paid = new_customer(lclient, lora_deploy.admin_key, plan="lora-paid")
    refused = _generate(lclient, paid.headers, loras=[{"name": "hobby-only"}])
    assert refused.status_code == 403, refused.text
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == ("license_forbids_plan", "loras")
    assert "hobby-only" not in [x["id"] for x in lclient.get("/v1/loras", headers=paid.headers).json()["data"]]
    assert _generate(lclient, paid.headers, loras=[{"name": "demo-style"}]).status_code == 200

    none = lclient.patch("/admin/plans/lora-paid", headers=admin, json={"max_loras": 0})
    assert none.status_code == 200 and none.json()["max_loras"] == 0
    r = _generate(lclient, paid.headers, loras=[{"name": "demo-style"}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_loras"


def test_without_a_models_file_the_demo_lora_is_served(client: httpx.Client, customer) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/v1/loras", headers=customer.headers).json()["data"]
    assert [(x["id"], x["trigger_words"]) for x in listed] == [("demo-style", ["demostyle"])]
    r = _generate(client, customer.headers, loras=[{"name": "demo-style", "weight": 0.8}])
    assert r.status_code == 200, r.text


def test_lora_use_is_reported_under_each_loras_licence(lora_deploy: LoraDeployment, lclient: httpx.Client) -> None:
    from datetime import UTC, datetime

    me = new_customer(lclient, lora_deploy.admin_key)
    for loras in ([{"name": "demo-style"}], [{"name": "hobby-only"}, {"name": "demo-style", "weight": 0.5}]):
        r = _generate(lclient, me.headers, n=2, loras=loras)
        assert r.status_code == 200, r.text
    month = datetime.now(UTC).strftime("%Y-%m")
    report = lclient.get("/admin/licenses/report", params={"month": month},
                         headers={"Authorization": f"Bearer {lora_deploy.admin_key}"})
    assert report.status_code == 200, report.text
    by_license = {lic["license"]: lic for lic in report.json()["licenses"]}
    demo_style = next(x for x in by_license["open"]["loras"] if x["lora"] == "demo-style")
    assert demo_style["images"] >= 4 and demo_style["free_plan_images"] >= 4
    [hobby] = by_license["no-resale"]["loras"]
    assert hobby["lora"] == "hobby-only" and hobby["images"] >= 2 and hobby["paid_plan_images"] == 0
