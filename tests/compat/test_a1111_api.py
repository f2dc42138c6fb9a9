"""/sdapi/v1: AUTOMATIC1111 clients against the live server (real queue, worker, demo model)."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from PIL import Image
from sqlalchemy import Engine, text

from app.runtime.encoding import read_parameters

# What the `webuiapi` package (mix1009/sdwebuiapi) posts for `api.txt2img(prompt=...)`: every key,
# at its defaults — including values only hires. fix reads (denoising_strength 0.7, hr_upscaler).
WEBUIAPI_DEFAULTS: dict[str, object] = {
    "enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0,
    "hr_resize_y": 0, "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0,
    "prompt": "", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, "width": 512,
    "height": 512, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
    "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
    "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "sampler_index": "Euler a", "script_name": None, "script_args": [], "send_images": True, "save_images": False,
    "alwayson_scripts": {},
}

# Every field of A1111 1.10's StableDiffusionProcessingTxt2Img at its default, plus keys a Forge
# client adds (A1111 ignores unknown keys; so do we).
A1111_FULL_BODY: dict[str, object] = {
    "prompt": "", "negative_prompt": "", "styles": [], "seed": -1, "subseed": -1, "subseed_strength": 0,
    "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": "DPM++ 2M", "scheduler": "Karras",
    "batch_size": 1, "n_iter": 1, "steps": 50, "cfg_scale": 7, "width": 512, "height": 512, "restore_faces": None,
    "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False, "eta": None, "denoising_strength": 0,
    "s_min_uncond": None, "s_churn": None, "s_tmax": None, "s_tmin": None, "s_noise": None, "override_settings": {},
    "override_settings_restore_afterwards": True, "refiner_checkpoint": None, "refiner_switch_at": None,
    "disable_extra_networks": False, "firstpass_image": None, "comments": None, "enable_hr": False,
    "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2.0, "hr_upscaler": None, "hr_second_pass_steps": 0,
    "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None, "hr_sampler_name": None, "hr_scheduler": None,
    "hr_prompt": "", "hr_negative_prompt": "", "force_task_id": None, "sampler_index": "Euler", "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {}, "infotext": None,
    "distilled_cfg_scale": 3.5, "hr_additional_modules": ["Use same choices"],
}


def _body(base: dict[str, object] | None = None, **changes: object) -> dict[str, object]:
    return {**(base or WEBUIAPI_DEFAULTS), "prompt": "a pony in a meadow", "width": 64, "height": 64,
            "steps": 2, **changes}


def _decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_webuiapi_default_payload_with_basic_auth(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(seed=1234, negative_prompt="blurry"),
                    auth=("anyone", customer.key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 1
    image = _decode(body["images"][0])
    assert image.format == "PNG"
    assert image.size == (64, 64)

    info = json.loads(body["info"])
    assert info["seed"] == 1234
    assert info["all_seeds"] == [1234]
    assert info["prompt"] == "score_9, score_8_up, score_7_up, a pony in a meadow"
    assert info["all_prompts"] == [info["prompt"]]
    assert info["negative_prompt"] == "blurry"
    assert info["sampler_name"] == "Euler a"
    assert (info["steps"], info["cfg_scale"], info["width"], info["height"]) == (2, 7.0, 64, 64)
    assert info["sd_model_name"] == "demo"
    assert info["batch_size"] == 1
    # The infotext is exactly the PNG's parameters text, as A1111 returns it.
    assert info["infotexts"] == [read_parameters(base64.b64decode(body["images"][0]))]
    assert "Steps: 2, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x64, Model: demo" in info["infotexts"][0]
    assert info["job_id"].startswith("gen_")
    assert len(info["image_ids"]) == 1

    params = body["parameters"]
    assert params["prompt"] == "a pony in a meadow"
    assert params["enable_hr"] is False
    assert params["denoising_strength"] == 0.7
    assert "x-ignored-fields" not in r.headers


def test_full_a1111_body_with_fork_extras_and_bearer(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(A1111_FULL_BODY, seed=5), headers=customer.headers)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    # A1111 1.9's separate scheduler folds into the sampler's Karras variant.
    assert info["sampler_name"] == "DPM++ 2M Karras"
    assert "Sampler: DPM++ 2M Karras" in info["infotexts"][0]
    assert r.headers["x-ignored-fields"] == "distilled_cfg_scale, hr_additional_modules"
    assert "distilled_cfg_scale" not in r.json()["parameters"]


def test_batches_multiply_and_are_metered_per_image(client, customer, pg_engine: Engine) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(batch_size=2, n_iter=2, seed=40), auth=("u", customer.key))
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert len(body["images"]) == 4
    assert info["all_seeds"] == [40, 41, 42, 43]
    assert (info["batch_size"], info["n_iter"]) == (2, 2)
    assert len(set(body["images"])) == 4
    with pg_engine.connect() as conn:
        charged = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"),
                               {"j": info["job_id"]}).scalar_one()
    assert charged == 4


def test_batch_over_the_plan_limit_is_refused_in_a1111_terms(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(batch_size=3, n_iter=2), headers=customer.headers)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "plan_limit_exceeded"
    assert error["param"] == "batch_size"
    assert "batch_size × n_iter = 3 × 2 = 6" in error["message"]


def test_random_seed_is_reported(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(seed=-1, batch_size=2), headers=customer.headers)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["seed"] >= 0
    assert info["all_seeds"] == [info["seed"], info["seed"] + 1]
    assert f"Seed: {info['seed'] + 1}," in info["infotexts"][1]


def test_same_seed_reproduces_the_native_result(client, customer) -> None:
    a1111 = client.post("/sdapi/v1/txt2img", json=_body(seed=77, cfg_scale=5), headers=customer.headers)
    native = client.post("/v1/images/generations", headers=customer.headers, json={
        "prompt": "a pony in a meadow", "size": "64x64", "steps": 2, "seed": 77, "sampler": "Euler a",
        "guidance_scale": 5, "response_format": "b64_json"})
    assert a1111.status_code == native.status_code == 200
    # The same pixels: the files differ only in the job id their provenance XMP names.
    assert _pixels(a1111.json()["images"][0]) == _pixels(native.json()["data"][0]["b64_json"])
    assert a1111.json()["images"][0] != native.json()["data"][0]["b64_json"]


def _pixels(b64: str) -> bytes:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.convert("RGB").tobytes()


def test_bad_sampler_is_400_naming_the_accepted_ones(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(sampler_name="Euler Turbo", sampler_index="Euler Turbo"),
                    headers=customer.headers)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_sampler"
    assert error["param"] == "sampler_name"
    assert "Euler Turbo" in error["message"]
    for name in ("Euler a", "DPM++ 2M Karras", "DDIM", "Karras"):
        assert name in error["message"]


def test_scheduler_without_a_matching_variant_is_400(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(sampler_name="Euler a", scheduler="Karras"),
                    headers=customer.headers)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "scheduler"
    r = client.post("/sdapi/v1/txt2img", json=_body(sampler_name="Euler", scheduler="Align Your Steps"),
                    headers=customer.headers)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "scheduler"


@pytest.mark.parametrize(("field", "value"), [
    ("tiling", True), ("restore_faces", True), ("styles", ["cinematic"]),
    ("subseed_strength", 0.3), ("seed_resize_from_w", 768), ("script_name", "x/y/z plot"),
    ("refiner_checkpoint", "sdxl_refiner"), ("alwayson_scripts", {"ADetailer": {"args": [True, {}]}}),
])
def test_features_we_cannot_honour_are_refused(client, customer, field: str, value: object) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(**{field: value}), headers=customer.headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_parameter"
    assert error["param"].startswith(field)
    assert "not supported" in error["message"]


def test_switched_off_extensions_are_accepted(client, customer) -> None:
    scripts = {"ADetailer": {"args": [False]}, "ControlNet": {"args": [{"enabled": False, "module": "none"}]},
               "Refiner": {"args": []}}
    r = client.post("/sdapi/v1/txt2img", json=_body(alwayson_scripts=scripts), headers=customer.headers)
    assert r.status_code == 200, r.text


def test_checkpoint_override_by_title_name_or_hash_and_unknown(client, customer) -> None:
    for value in ("demo", "demo [0123456789]", "DEMO"):
        r = client.post("/sdapi/v1/txt2img", json=_body(override_settings={"sd_model_checkpoint": value}),
                        headers=customer.headers)
        assert r.status_code == 200, (value, r.text)
        assert json.loads(r.json()["info"])["sd_model_name"] == "demo"
    r = client.post("/sdapi/v1/txt2img",
                    json=_body(override_settings={"sd_model_checkpoint": "ponyDiffusionV6XL.safetensors"}),
                    headers=customer.headers)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "override_settings.sd_model_checkpoint")
    assert "demo" in error["message"]


def test_samples_format_and_send_images(client, customer) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(override_settings={"samples_format": "jpg",
                                                                        "CLIP_stop_at_last_layers": 2,
                                                                        "show_progressbar": True}),
                    headers=customer.headers)
    assert r.status_code == 200, r.text
    assert _decode(r.json()["images"][0]).format == "JPEG"
    assert json.loads(r.json()["info"])["clip_skip"] == 2
    assert r.headers["x-ignored-fields"] == "override_settings.show_progressbar"

    r = client.post("/sdapi/v1/txt2img", json=_body(send_images=False), headers=customer.headers)
    assert r.status_code == 200, r.text
    assert r.json()["images"] == []
    image_id = json.loads(r.json()["info"])["image_ids"][0]
    stored = client.get(f"/v1/images/{image_id}", headers=customer.headers)
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("changes", "param"), [
    ({"prompt": "   "}, "prompt"),
    ({"steps": "many"}, "steps"),
    ({"cfg_scale": 80}, "cfg_scale"),
    ({"width": 65}, "width"),
    ({"seed": -7}, "seed"),
    ({"override_settings": {"samples_format": "gif"}}, "override_settings.samples_format"),
    ({"override_settings": {"sd_vae": "sdxl_vae.safetensors"}}, "override_settings.sd_vae"),
])
def test_invalid_values_are_400_with_the_a1111_field_name(client, customer, changes, param: str) -> None:
    r = client.post("/sdapi/v1/txt2img", json=_body(**changes), headers=customer.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_authentication_is_required(client, customer) -> None:
    assert client.post("/sdapi/v1/txt2img", json=_body()).status_code == 401
    assert client.post("/sdapi/v1/txt2img", json=_body(), auth=("user", "wrong")).status_code == 401
    assert client.get("/sdapi/v1/sd-models", auth=("user", customer.key)).status_code == 200
    assert client.get("/sdapi/v1/samplers").status_code == 401


def test_idempotency_key_replays_without_charging_again(client, customer) -> None:
    headers = {**customer.headers, "Idempotency-Key": "a1111-retry-1"}
    first = client.post("/sdapi/v1/txt2img", json=_body(seed=3), headers=headers)
    second = client.post("/sdapi/v1/txt2img", json=_body(seed=3), headers=headers)
    assert first.status_code == second.status_code == 200
    assert json.loads(first.json()["info"])["job_id"] == json.loads(second.json()["info"])["job_id"]
    assert second.headers["idempotent-replayed"] == "true"


def test_samplers_and_schedulers(client, customer) -> None:
    r = client.get("/sdapi/v1/samplers", headers=customer.headers)
    assert r.status_code == 200
    samplers = {s["name"]: s for s in r.json()}
    assert {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"} <= set(samplers)
    for item in samplers.values():
        assert set(item) == {"name", "aliases", "options"}
    assert "k_euler_a" in samplers["Euler a"]["aliases"]
    assert samplers["DPM++ 2M Karras"]["options"]["scheduler"] == "karras"
    assert "scheduler" not in samplers["DPM++ 2M"]["options"]

    r = client.get("/sdapi/v1/schedulers", headers=customer.headers)
    assert r.status_code == 200
    assert [s["label"] for s in r.json()] == ["Automatic", "Uniform", "Karras", "Exponential"]
    assert set(r.json()[0]) == {"name", "label", "aliases", "default_rho", "need_inner_model"}


def test_sd_models_and_options(client, customer) -> None:
    r = client.get("/sdapi/v1/sd-models", headers=customer.headers)
    assert r.status_code == 200
    assert r.json() == [{"title": "demo", "model_name": "demo", "hash": None, "sha256": None,
                         "filename": "demo", "config": None}]

    r = client.get("/sdapi/v1/options", headers=customer.headers)
    assert r.status_code == 200
    options = r.json()
    assert options["sd_model_checkpoint"] == "demo"
    assert options["samples_format"] == "png"

    # Re-applying the current settings is harmless; changing them is not possible here.
    same = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "demo", "samples_format": "png"},
                       headers=customer.headers)
    assert same.status_code == 200, same.text
    change = client.post("/sdapi/v1/options", json={"samples_format": "webp"}, headers=customer.headers)
    assert change.status_code == 400
    error = change.json()["error"]
    assert (error["code"], error["param"]) == ("options_read_only", "samples_format")
    assert "override_settings" in error["message"]


def test_progress_idle_then_running(client, customer) -> None:
    idle = client.get("/sdapi/v1/progress", headers=customer.headers)
    assert idle.status_code == 200
    assert idle.json()["progress"] == 0
    assert idle.json()["state"]["job_count"] == 0
    assert idle.json()["current_image"] is None

    job = client.post("/v1/generations", json={"prompt": "a pony", "size": "128x128", "steps": 50},
                      headers=customer.headers).json()
    try:
        deadline, seen = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            r = client.get("/sdapi/v1/progress?skip_current_image=true", auth=("u", customer.key))
            assert r.status_code == 200
            seen = r.json()
            if seen["progress"] > 0:
                break
            time.sleep(0.1)
        assert seen is not None
        assert 0 < seen["progress"] <= 1, seen
        state = seen["state"]
        assert state["job"] == job["id"]
        assert state["job_count"] == 1
        assert state["sampling_steps"] == 50
        assert seen["progress"] == pytest.approx(state["sampling_step"] / 50)
        assert seen["eta_relative"] >= 0
        assert set(seen) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    finally:
        client.post(f"/v1/generations/{job['id']}/cancel", headers=customer.headers)
