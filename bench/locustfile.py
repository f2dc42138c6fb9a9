"""A load test partners can run: several tenants at once, through every way in.

Each simulated user is one tenant's integration, picking (by weight) a synchronous OpenAI-style
generation, an asynchronous one followed over its event stream, an A1111 txt2img, a read of its
usage, or a deliberately bad request (which must get its 4xx, never a 5xx). Keys come from
``PONYSERVE_LOAD_KEYS`` (comma-separated, one per tenant); ``bench/load.py`` makes them against a
scratch service and runs this file headless.

    locust -f bench/locustfile.py --headless -u 24 -r 8 -t 60s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import HttpUser, between, task

_KEYS = [k for k in os.environ.get("PONYSERVE_LOAD_KEYS", "").split(",") if k]
_next_key = itertools.cycle(_KEYS or ["missing-key"])
SMALL = {"prompt": "a pony in a meadow", "size": "64x64", "steps": 2}
# Bad requests a fuzzing or careless client sends, each with the only status it may get.
BAD: list[tuple[str, dict[str, object] | str, int]] = [
    ("/v1/generations", "{not json", 422),
    ("/v1/generations", {**SMALL, "unknown_field": 1}, 400),
    ("/v1/generations", {**SMALL, "steps": 0}, 400),
    ("/v1/generations", {**SMALL, "size": "65x64"}, 400),
    ("/v1/images/generations", {"prompt": ""}, 400),
]


class Tenant(HttpUser):
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {next(_next_key)}"

    @task(3)
    def sync_generation(self) -> None:
        with self.client.post("/v1/images/generations", json={**SMALL, "response_format": "b64_json"},
                              name="sync generation", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code} {r.text[:200]}")

    @task(3)
    def async_generation_with_events(self) -> None:
        with self.client.post("/v1/generations", json=SMALL, name="accept", catch_response=True) as r:
            if r.status_code not in (200, 202):
                r.failure(f"{r.status_code} {r.text[:200]}")
                return
            job = r.json()["id"]
        with self.client.get(f"/v1/generations/{job}/events", name="events", stream=True,
                             catch_response=True) as stream:
            if stream.status_code != 200:
                stream.failure(f"{stream.status_code}")
                return
            terminal = False
            for line in stream.iter_lines(decode_unicode=True):
                if line in ("event: completed", "event: failed", "event: cancelled"):
                    terminal = line == "event: completed"
                    break
            if not terminal:
                stream.failure("the stream ended without a completed event")

    @task(2)
    def a1111_txt2img(self) -> None:
        body = {"prompt": "a pony", "width": 64, "height": 64, "steps": 2}
        with self.client.post("/sdapi/v1/txt2img", json=body, name="a1111 txt2img", catch_response=True) as r:
            if r.status_code != 200 or not r.json().get("images"):
                r.failure(f"{r.status_code} {r.text[:200]}")

    @task(1)
    def usage(self) -> None:
        with self.client.get("/v1/usage", name="usage", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}")

    @task(2)
    def bad_request(self) -> None:
        path, body, expected = random.choice(BAD)
        data = body if isinstance(body, str) else json.dumps(body)
        with self.client.post(path, data=data, headers={"Content-Type": "application/json"},
                              name=f"bad request ({expected})", catch_response=True) as r:
            if r.status_code == expected and "error" in r.json():
                r.success()
            else:
                r.failure(f"expected {expected}, got {r.status_code} {r.text[:200]}")
