"""LoRAs through the webuiapi A1111 client: `<lora:name:weight>` in the prompt, /sdapi/v1/loras, refresh-loras."""

from __future__ import annotations

import numpy as np
import webuiapi
from harness import new_customer
from lora_deploy import LoraDeployment


def _api(lora_deploy: LoraDeployment, key: str) -> webuiapi.WebUIApi:
    host, port = lora_deploy.server.url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    api.session.headers["Authorization"] = f"Bearer {key}"
    return api


def test_a_lora_tag_in_an_a1111_prompt_applies_the_lora(lora_deploy: LoraDeployment, lclient) -> None:  # type: ignore[no-untyped-def]
    me = new_customer(lclient, lora_deploy.admin_key)
    api = _api(lora_deploy, me.key)
    common = {"width": 64, "height": 64, "steps": 2, "seed": 33, "sampler_name": "Euler a"}
    plain = np.asarray(api.txt2img(prompt="a pony", **common).image.convert("RGB"), dtype=np.int16)
    styled_result = api.txt2img(prompt="a pony <lora:demo-style:1>", **common)
    styled = np.asarray(styled_result.image.convert("RGB"), dtype=np.int16)
    off = np.asarray(api.txt2img(prompt="a pony <lora:demo-style:0>", **common).image.convert("RGB"),
                     dtype=np.int16)
    assert np.abs(styled - plain).mean() > 5
    assert np.abs(off - plain).max() <= 2
    assert styled_result.info["prompt"].endswith("a pony")  # the tag is not prompt text

    names = [item["name"] for item in api.get_loras()]
    assert "demo-style" in names
    r = lclient.post("/sdapi/v1/refresh-loras", headers=me.headers)
    assert r.status_code == 200, r.text

    unknown = lclient.post("/sdapi/v1/txt2img", headers=me.headers,
                           json={"prompt": "a pony <lora:missing:1>", **common})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_lora" and "missing" in unknown.json()["error"]["message"]
