"""Prompt screening on the live service: refusals are generic, leave an incident and cost
nothing; CSAM-category strikes suspend the account; ratings shape the prompt the model gets."""

from __future__ import annotations

import httpx
from moderation_deploy import MAX_PROMPT_CHARS, OPERATOR_BLOCKED_TERM, auth, generate
from sqlalchemy import text


def _jobs_and_usage(moderated, client: httpx.Client, customer) -> tuple[int, dict[str, int]]:
    with moderated.engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE account_id = :a"),
                            {"a": customer.account_id}).scalar_one()
    day = client.get("/v1/usage", headers=customer.headers).json()["account"]["day"]
    return jobs, {"used": day["used"], "reserved": day["reserved"]}


def _incidents(moderated, account_id: str) -> list[dict[str, object]]:
    r = httpx.get(f"{moderated.server.url}/admin/moderation/incidents", params={"account_id": account_id},
                  headers=auth(moderated.moderator_key))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_csam_prompt_is_refused_generically_with_incident_and_no_job_or_quota(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    r = generate(mclient, cust.headers, "loli, beach", negative_prompt="blurry")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "content_policy_violation"
    assert "loli" not in r.text.lower()
    assert _jobs_and_usage(moderated, mclient, cust) == (0, {"used": 0, "reserved": 0})
    [incident] = _incidents(moderated, cust.account_id)
    assert incident["category"] == "csam"
    assert incident["api_key_id"] == cust.key_id
    assert incident["prompt"] == "loli, beach"
    assert incident["negative_prompt"] == "blurry"
    assert incident["rule"].startswith("csam.")
    assert incident["strike"] is True
    assert incident["created_at"]
    moderator = auth(moderated.moderator_key)
    for since, expected in (("2000-01-01T00:00:00", 1), ("2999-01-01T00:00:00+00:00", 0)):
        r = mclient.get("/admin/moderation/incidents", params={"account_id": cust.account_id, "since": since},
                        headers=moderator)
        assert len(r.json()["data"]) == expected, r.text
    r = mclient.get("/admin/moderation/incidents", params={"category": "csam", "api_key_id": cust.key_id},
                    headers=moderator)
    assert [i["id"] for i in r.json()["data"]] == [incident["id"]]


def test_async_endpoint_and_a1111_are_screened_too(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    r = mclient.post("/v1/generations", json={"prompt": "l o l i", "size": "64x64", "steps": 2},
                     headers=cust.headers)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "content_policy_violation")
    a1111 = mclient.post("/sdapi/v1/txt2img", json={"prompt": f"a {OPERATOR_BLOCKED_TERM}", "steps": 2,
                                                   "width": 64, "height": 64}, headers=cust.headers)
    assert a1111.status_code == 400
    assert OPERATOR_BLOCKED_TERM not in a1111.text
    assert _jobs_and_usage(moderated, mclient, cust)[0] == 0
    categories = sorted(i["category"] for i in _incidents(moderated, cust.account_id))
    assert categories == ["blocklist", "csam"]


def test_operator_blocklist_refuses_without_a_strike(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    r = generate(mclient, cust.headers, f"a ({OPERATOR_BLOCKED_TERM}:1.3) on a hill")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "content_policy_violation")
    assert OPERATOR_BLOCKED_TERM not in r.text
    [incident] = _incidents(moderated, cust.account_id)
    assert (incident["category"], incident["rule"], incident["strike"]) == ("blocklist", "blocklist.operator", False)


def test_three_csam_strikes_in_a_day_suspend_the_account(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    second_key = mclient.post(f"/admin/accounts/{cust.account_id}/keys", json={"name": "other"},
                              headers=auth(moderated.admin_key)).json()["key"]
    before = _metric(mclient, "ponyserve_account_suspensions_total")
    for prompt in ("loli", "shota, park"):
        assert generate(mclient, cust.headers, prompt).json()["error"]["code"] == "content_policy_violation"
    # Still active after two strikes: an ordinary prompt goes through.
    pending = mclient.post("/v1/generations", json={"prompt": "a pony", "size": "512x512", "steps": 50},
                           headers=cust.headers)
    assert pending.status_code == 202
    third = generate(mclient, auth(second_key), "jailbait")
    assert (third.status_code, third.json()["error"]["code"]) == (400, "content_policy_violation")

    for headers in (cust.headers, auth(second_key)):
        r = generate(mclient, headers, "a pony in a meadow")
        assert (r.status_code, r.json()["error"]["code"]) == (403, "account_suspended")
    account = mclient.get(f"/admin/accounts/{cust.account_id}", headers=auth(moderated.admin_key)).json()
    assert account["status"] == "suspended"
    incidents = _incidents(moderated, cust.account_id)
    assert [i["suspended_account"] for i in incidents] == [True, False, False]  # newest first
    assert all(i["strike"] for i in incidents)
    # The suspension stopped the account's unfinished work (a slow job, still running): cancelled, not charged.
    with moderated.engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM jobs WHERE id = :j"), {"j": pending.json()["id"]}).scalar_one()
        charged = conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"),
                               {"j": pending.json()["id"]}).scalar_one()
    assert (status, charged) == ("cancelled", 0)
    assert _metric(mclient, "ponyserve_account_suspensions_total") == before + 1
    assert _metric(mclient, 'ponyserve_moderation_blocks_total{category="csam"}') >= 3


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prompt_length_cap(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    r = generate(mclient, cust.headers, "a" * (MAX_PROMPT_CHARS + 1))
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["param"]) == (400, "prompt_too_long", "prompt")
    r = generate(mclient, cust.headers, "a cat", negative_prompt="b" * (MAX_PROMPT_CHARS + 1))
    assert (r.status_code, r.json()["error"]["param"]) == (400, "negative_prompt")
    # The cap is on the caller's text; the model's prefix does not count against it.
    ok = mclient.post("/v1/generations", json={"prompt": "a" * MAX_PROMPT_CHARS, "size": "64x64", "steps": 2},
                      headers=cust.headers)
    assert ok.status_code == 202, ok.text
    assert _incidents(moderated, cust.account_id) == []


def test_rating_tags_follow_the_account_rating_on_pony_models(moderated, mclient) -> None:
    body = {"prompt": "a pony in a meadow", "model": "pony", "size": "64x64", "steps": 2}
    safe = moderated.customer(mclient)  # safe is the default
    job = mclient.post("/v1/generations", json=body, headers=safe.headers).json()
    assert job["parameters"]["revised_prompt"] == \
        "score_9, score_8_up, score_7_up, rating_safe, a pony in a meadow"
    assert job["parameters"]["revised_negative_prompt"] == "rating_explicit, rating_questionable"

    questionable = moderated.customer(mclient, max_rating="questionable")
    r = generate(mclient, questionable.headers, "a pony", model="pony", negative_prompt="lowres",
                 response_format="url")
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["revised_prompt"] == "score_9, score_8_up, score_7_up, rating_questionable, a pony"

    explicit = moderated.customer(mclient, max_rating="explicit")
    job = mclient.post("/v1/generations", json=body, headers=explicit.headers).json()
    assert job["parameters"]["revised_prompt"] == "score_9, score_8_up, score_7_up, a pony in a meadow"
    # A prompt that mentions a minor is generated at rating_safe, whatever the account allows.
    job = mclient.post("/v1/generations", json={**body, "prompt": "a child flying a kite"},
                       headers=explicit.headers).json()
    assert "rating_safe" in job["parameters"]["revised_prompt"]
    # Models without rating_tags are left alone.
    job = mclient.post("/v1/generations", json={**body, "model": "demo"}, headers=safe.headers).json()
    assert job["parameters"]["revised_prompt"] == "score_9, score_8_up, score_7_up, a pony in a meadow"
    assert job["parameters"]["revised_negative_prompt"] == ""


def test_explicit_terms_are_refused_for_safe_accounts_only(moderated, mclient) -> None:
    safe = moderated.customer(mclient)
    r = generate(mclient, safe.headers, "nude woman on a beach", model="pony")
    assert (r.status_code, r.json()["error"]["code"]) == (400, "rating_violation")
    assert "nude" not in r.json()["error"]["message"]
    assert _jobs_and_usage(moderated, mclient, safe) == (0, {"used": 0, "reserved": 0})
    [incident] = _incidents(moderated, safe.account_id)
    assert (incident["category"], incident["strike"]) == ("rating_violation", False)
    # A rating tag above the account's rating is refused the same way.
    questionable = moderated.customer(mclient, max_rating="questionable")
    r = generate(mclient, questionable.headers, "rating_explicit, a woman", model="pony")
    assert r.json()["error"]["code"] == "rating_violation"

    explicit = moderated.customer(mclient, max_rating="explicit")
    r = mclient.post("/v1/generations", json={"prompt": "nude woman on a beach", "model": "pony", "size": "64x64",
                                              "steps": 2}, headers=explicit.headers)
    assert r.status_code == 202, r.text


def test_max_rating_and_threshold_are_validated_on_patch(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    admin = auth(moderated.admin_key)
    account = mclient.get(f"/admin/accounts/{cust.account_id}", headers=admin).json()
    assert (account["max_rating"], account["review_threshold"]) == ("safe", 0.8)
    for patch in ({"max_rating": "nsfw"}, {"max_rating": None}, {"review_threshold": 1.5}):
        r = mclient.patch(f"/admin/accounts/{cust.account_id}", json=patch, headers=admin)
        assert r.status_code == 400, (patch, r.text)
    r = mclient.patch(f"/admin/accounts/{cust.account_id}", json={"max_rating": "explicit", "review_threshold": 0.5},
                      headers=admin)
    assert (r.json()["max_rating"], r.json()["review_threshold"]) == ("explicit", 0.5)
