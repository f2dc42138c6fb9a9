"""The official OpenAI Python SDK works against ponyserve unchanged."""

from __future__ import annotations

import base64
import io

import openai
from PIL import Image


def test_openai_client_images_generate(live, customer) -> None:
    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    result = client.images.generate(prompt="a pony astronaut", model="demo", size="256x256", n=2,
                                    response_format="b64_json")
    assert len(result.data) == 2
    for item in result.data:
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (256, 256)
        assert item.revised_prompt.endswith("a pony astronaut")


def test_openai_client_surfaces_our_errors(live, customer) -> None:
    client = openai.OpenAI(api_key=customer.key, base_url=f"{live.url}/v1", max_retries=0)
    try:
        client.images.generate(prompt="x", model="no-such-model")
    except openai.BadRequestError as exc:
        assert exc.code == "model_not_found"
    else:
        raise AssertionError("expected a 400")


def test_openai_client_with_revoked_key_gets_authentication_error(live, client, admin_key, make_customer) -> None:
    cust = make_customer()
    client.delete(f"/admin/keys/{cust.key_id}", headers={"Authorization": f"Bearer {admin_key}"})
    sdk = openai.OpenAI(api_key=cust.key, base_url=f"{live.url}/v1", max_retries=0)
    try:
        sdk.images.generate(prompt="x")
    except openai.AuthenticationError:
        pass
    else:
        raise AssertionError("expected a 401")
