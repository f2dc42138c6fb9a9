"""Benchmark of the prompt-moderation engine; prints one JSON document.

    .venv/bin/python bench/moderation.py [--iterations N]

Measures, on this machine:

* decision time (p50/p99/max) of ``PromptPolicy.check`` for realistic 200- and
  2,000-character Pony prompts (weights, LoRA tags, score tags, digits) with a
  typical negative prompt, on an NSFW-capable model, with 1,000 opted-out artists;
* decision time for 20,000-character adversarial prompts (nested brackets, repeated
  near-misses, thousands of blocked or allow-listed matches, spaced letters,
  zero-width padding, combining marks…) with the length cap raised to 20,000 so the
  matching itself is timed, plus the same prompt against the default cap;
* build time of the policy and of an opt-out rebuild (1,000 and 10,000 artists);
* recall on the corpus' blocked set and false-positive rate on its benign set
  (tests/moderation/moderation_corpus.toml).

Targets: p99 < 1 ms at 2,000 characters, < 10 ms for the adversarial prompts.

With ``--service`` it also measures the moderation path of the running service (two
``ponyserve serve`` processes on a scratch Postgres database, the first with the embedded
worker): latency of refused requests by category (a CSAM refusal writes its incident and
strike in its own transaction) next to an accepted asynchronous request, and how long an
opt-out created on one replica takes to be enforced by the other.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "moderation")]

from moderation_corpus import load_corpus  # noqa: E402

from app.moderation import OptOutEntry, PromptPolicy  # noqa: E402

NEGATIVE = "score_4, score_5, score_6, worst quality, low quality, blurry, jpeg artifacts, bad hands, watermark"
TAGS = (
    "1girl", "solo", "long hair", "blue eyes", "smile", "looking at viewer", "outdoors", "cherry blossoms",
    "detailed background", "(masterpiece:1.2)", "((best quality))", "[sunset:night:0.6]", "[cat|fox] ears",
    "<lora:add_detail:0.6>", "<lyco:style_v2:0.8>", "embedding:easynegative", "BREAK", "2girls", "4k",
    "35mm photograph", "f/1.8", "bokeh", "dramatic lighting", "by greg hildebrandt", "cyberpunk city", "rain",
    "neon lights", "kimono", "holding umbrella", "from side", "upper body", "wind", "floating hair",
    "(depth of field:1.1)", "score_9", "score_8_up", "source_anime", "rating_safe", "1990s (style)",
    "retro artstyle", "kid goat", "baby blue dress", "24 years old", "mature female", "red dress",
)  # fmt: skip


def realistic_prompt(rng: random.Random, length: int) -> str:
    parts: list[str] = []
    while sum(len(p) + 2 for p in parts) < length:
        parts.append(rng.choice(TAGS))
    return ", ".join(parts)[:length]


ADVERSARIAL = {
    "nested_brackets": "(" * 10_000 + "loli" + ")" * 9_996,
    "near_misses": "lol lolita lolli lo li " * 870,
    "allow_phrases_hiding_terms": "kid goat, baby blue, nude lipstick, " * 560,
    "repeated_blocked_term": "cp " * 6_667,
    "repeated_youth_and_sexual": "child, nude, " * 1_539,
    "spaced_letters": "l o l l o l " * 1_667,
    "dots_and_digits": "1.1." * 5_000,
    "ages_everywhere": "15yo 1 5 y o age 15 " * 1_000,
    "one_long_token": "a" * 20_000,
    "zero_width_padding": "l" + "\u200b" * 19_998 + "i",
    "combining_marks": "e\u0301" * 10_000,
    "homoglyph_soup": "ѕһоtа ｌｏｌｉ " * 1_819,
    "lora_tags": "<lora:" * 3_334,
    "weights": "(a:1.2)" * 2_858,
    "digits_before_closers": "1)" * 10_000,
    "pipes": "l|o|l|i|" * 2_500,
}


def timings(fn: Callable[[], object], iterations: int) -> dict[str, float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return {
        "p50_us": round(samples[len(samples) // 2] / 1000, 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000, 1),
        "max_us": round(samples[-1] / 1000, 1),
        "iterations": iterations,
    }


def once_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2)


def adversarial_timings(policy: PromptPolicy, iterations: int = 200) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, text in ADVERSARIAL.items():
        text = text[:20_000]
        assert len(text) == 20_000, name
        result: dict[str, Any] = dict(
            timings(lambda text=text: policy.check(text, NEGATIVE, nsfw_capable_model=True), iterations)
        )
        result["decision"] = policy.check(text, NEGATIVE, nsfw_capable_model=True).rule or "allowed"
        results[name] = result
    return results


def artists(count: int, first_id: int = 0) -> list[OptOutEntry]:
    return [OptOutEntry(i, f"artist {i} surname{i}", aliases=(f"alias{i}",)) for i in range(first_id, first_id + count)]


def corpus_quality(policy: PromptPolicy) -> dict[str, object]:
    blocked, benign = load_corpus()
    blocked_checks = benign_checks = caught = false_positives = 0
    for case in blocked:
        for nsfw in case.model_flags:
            blocked_checks += 1
            decision = policy.check(case.prompt, case.negative, nsfw_capable_model=nsfw, max_rating=case.rating)
            caught += (not decision.allowed) and decision.category == case.category
    for case in benign:
        for nsfw in case.model_flags:
            benign_checks += 1
            decision = policy.check(case.prompt, case.negative, nsfw_capable_model=nsfw, max_rating=case.rating)
            false_positives += not decision.allowed
    return {
        "blocked_cases": len(blocked),
        "blocked_checks": blocked_checks,
        "recall": round(caught / blocked_checks, 4),
        "benign_cases": len(benign),
        "benign_checks": benign_checks,
        "false_positive_rate": round(false_positives / benign_checks, 4),
    }


def service_figures(requests: int, changes: int) -> dict[str, Any]:
    import subprocess
    import tempfile

    import httpx

    sys.path.insert(0, str(ROOT / "bench"))
    from _service import ADMIN_URL, customer_key, percentile, running_service, scratch_database

    from app.runtime.demo_model import write_demo_model

    def latency(client: httpx.Client, body: dict[str, object], expect: int) -> dict[str, float]:
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            r = client.post("/v1/generations", json=body)
            samples.append((time.perf_counter() - started) * 1000)
            assert r.status_code == expect, r.text
        return {"p50_ms": round(percentile(samples, 50), 2), "p95_ms": round(percentile(samples, 95), 2),
                "requests": requests}

    env = {"PONYSERVE_MODERATION_STRIKE_THRESHOLD": "1000000", "PONYSERVE_LOG_JSON": "true"}
    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url:
        data = Path(tmp)
        write_demo_model(data / "demo")
        with running_service(url, data, data / "demo", **env) as (base, admin):
            key = customer_key(base, admin)
            admin_headers = {"Authorization": f"Bearer {admin}"}
            port = _free_port()
            replica = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--no-embedded-worker", "--port", str(port)],
                env={**os.environ, **env, "PONYSERVE_DATABASE_URL": url, "PONYSERVE_DATA_DIR": str(data),
                     "PONYSERVE_DEMO_MODEL_PATH": str(data / "demo")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            other = f"http://127.0.0.1:{port}"
            try:
                _wait_healthy(other)
                headers = {"Authorization": f"Bearer {key}"}
                small = {"size": "64x64", "steps": 1}
                with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                    name = "Bench Artist Zero"
                    httpx.post(f"{base}/admin/optouts", json={"name": name}, headers=admin_headers)
                    refused = {
                        "csam": latency(client, {"prompt": "loli, beach", **small}, 400),
                        "blocklist": latency(client, {"prompt": "snuff film", **small}, 400),
                        "artist_optout": latency(client, {"prompt": f"castle by {name}", **small}, 400),
                        "rating_violation": latency(client, {"prompt": "nude woman", **small}, 400),
                    }
                    accepted = latency(client, {"prompt": "a pony in a meadow", **small}, 202)
                propagation = []
                with httpx.Client(base_url=other, headers=headers, timeout=30) as replica_client:
                    for i in range(changes):
                        artist = f"Bench Painter {chr(ord('a') + i)}{chr(ord('a') + i)}x"
                        prompt = {"prompt": f"a harbour by {artist}", **small}
                        created = httpx.post(f"{base}/admin/optouts", json={"name": artist}, headers=admin_headers)
                        assert created.status_code == 201, created.text
                        started = time.perf_counter()
                        while replica_client.post("/v1/generations", json=prompt).status_code != 400:
                            time.sleep(0.02)
                        propagation.append(time.perf_counter() - started)
            finally:
                replica.terminate()
                replica.wait(timeout=60)
    return {
        "database": ADMIN_URL.rpartition("/")[0].rpartition("@")[-1],
        "refused_request_latency": refused,
        "accepted_async_request_latency": accepted,
        "optout_propagation_to_other_replica_s": {
            "p50": round(percentile(propagation, 50), 2), "max": round(max(propagation), 2), "changes": changes,
            "refresh_interval_s": 2.0,
        },
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--service", action="store_true", help="also measure the running service's moderation path")
    parser.add_argument("--service-requests", type=int, default=200)
    parser.add_argument("--service-changes", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(20261126)

    started = time.perf_counter()
    policy = PromptPolicy.build(optouts=artists(1000))
    build_ms = round((time.perf_counter() - started) * 1000, 1)
    wide = replace(policy, max_prompt_chars=20_000)  # the same lists; the cap raised so matching is timed

    decision_time = {}
    for length in (200, 2000):
        prompts = [realistic_prompt(rng, length) for _ in range(64)]
        cycle = iter(prompts * (args.iterations // len(prompts) + 1))
        for prompt in prompts:  # warm the lazy Unicode table and caches
            policy.check(prompt, NEGATIVE, nsfw_capable_model=True)
        decision_time[f"{length}_chars"] = timings(
            lambda cycle=cycle: policy.check(next(cycle), NEGATIVE, nsfw_capable_model=True), args.iterations
        )

    adversarial = adversarial_timings(wide)
    # A long-running service freezes its startup heap (gc.freeze()) so full collections stop
    # re-walking it; timed again that way, the p99 shows the engine rather than the collector.
    gc.collect()
    gc.freeze()
    adversarial_frozen = adversarial_timings(wide)
    gc.unfreeze()
    both_prompts = max(
        once_ms(lambda text=text: wide.check(text[:20_000], text[:20_000], nsfw_capable_model=True))
        for text in ADVERSARIAL.values()
    )
    default_cap = timings(lambda: policy.check(ADVERSARIAL["nested_brackets"], NEGATIVE), 1000)

    rebuild: dict[str, float] = {}
    for count in (1000, 10_000):
        fresh = artists(count, first_id=10**6 * count)  # names never normalised before
        rebuild[f"with_optouts_{count}_new_artists_ms"] = once_ms(lambda fresh=fresh: policy.with_optouts(fresh), 1)
        changed = [*fresh[1:], OptOutEntry(-1, "one new artist")]  # a registry edit: one in, one out
        rebuild[f"with_optouts_{count}_artists_one_changed_ms"] = once_ms(
            lambda changed=changed: policy.with_optouts(changed), 3
        )

    report = {
        "benchmark": "moderation",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "decision_time": decision_time,
        "adversarial_20000_chars": adversarial,
        "adversarial_worst_p50_us": max(r["p50_us"] for r in adversarial.values()),
        "adversarial_worst_p99_us": max(r["p99_us"] for r in adversarial.values()),
        "adversarial_worst_p99_us_gc_frozen": max(r["p99_us"] for r in adversarial_frozen.values()),
        "adversarial_both_prompts_20000_chars_worst_ms": both_prompts,
        "adversarial_at_default_cap_4000": default_cap,
        "build": {"policy_with_1000_artists_ms": build_ms, **rebuild},
        "corpus": corpus_quality(policy),
        "targets": {
            "p99_2000_chars_under_1ms": decision_time["2000_chars"]["p99_us"] < 1000,
            "adversarial_p99_under_10ms": max(r["p99_us"] for r in adversarial.values()) < 10_000,
        },
    }
    if args.service:
        report["service"] = service_figures(args.service_requests, args.service_changes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
