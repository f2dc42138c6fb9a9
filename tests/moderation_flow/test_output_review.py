"""Output review with a fake classifier (fixed score 0.9) loaded through the real loader:
withheld images are stored but neither served nor charged, and queued for moderators, whose
every decision is audited; an approved image is then settled like any delivery."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from moderation_deploy import FAKE_SCORE, auth, generate, write_fake_classifier
from sqlalchemy import text

from app.moderation.classifier import ClassifierError, load_classifier


def _ledger_rows(moderated, job_id: str) -> int:
    with moderated.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM usage_ledger WHERE job_id = :j"),
                                {"j": job_id}).scalar_one())


def _reviews(client: httpx.Client, moderator: str, account_id: str, status: str = "pending") -> list[dict]:
    r = client.get("/admin/moderation/reviews", params={"account_id": account_id, "status": status},
                   headers=auth(moderator))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_withheld_images_for_a_safe_account_flow_through_review(moderated, mclient) -> None:
    cust = moderated.customer(mclient)  # safe, threshold 0.8 < the classifier's 0.9
    r = generate(mclient, cust.headers, "a lighthouse", n=2, seed=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["status"] for d in body["data"]] == ["withheld", "withheld"]
    assert all(d["b64_json"] is None and d["url"] is None for d in body["data"])
    assert body["usage"]["images"] == 0
    job = mclient.get(f"/v1/generations/{body['id']}", headers=cust.headers).json()
    assert job["status"] == "succeeded"
    assert [(o["status"], o["url"]) for o in job["outputs"]] == [("withheld", None), ("withheld", None)]
    usage = mclient.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
    assert (usage["used"], usage["reserved"]) == (0, 0)
    assert _ledger_rows(moderated, body["id"]) == 0
    image_ids = [d["id"] for d in body["data"]]
    for image_id in image_ids:
        r = mclient.get(f"/v1/images/{image_id}", headers=cust.headers)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "image_withheld")

    reviews = _reviews(mclient, moderated.moderator_key, cust.account_id)
    assert sorted(rv["image_id"] for rv in reviews) == sorted(image_ids)
    assert all(rv["score"] == pytest.approx(FAKE_SCORE) and rv["threshold"] == 0.8 for rv in reviews)
    by_image = {rv["image_id"]: rv for rv in reviews}
    keep, drop = by_image[image_ids[0]], by_image[image_ids[1]]

    moderator = auth(moderated.moderator_key)
    shown = mclient.get(keep["image_url"], headers=moderator)
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"

    approved = mclient.post(f"/admin/moderation/reviews/{keep['id']}/approve", json={"note": "benign"},
                            headers=moderator)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["note"]) == ("approved", "benign")
    released = mclient.get(f"/v1/images/{image_ids[0]}", headers=cust.headers)
    assert released.status_code == 200 and released.content == shown.content

    rejected = mclient.post(f"/admin/moderation/reviews/{drop['id']}/reject", headers=moderator)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    gone = mclient.get(f"/v1/images/{image_ids[1]}", headers=cust.headers)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "image_removed")
    with moderated.engine.connect() as conn:
        storage_key = conn.execute(text("SELECT storage_key FROM job_outputs WHERE id = :i"),
                                   {"i": image_ids[1]}).scalar_one()
    assert not (Path(moderated.server.settings.resolved_images_dir) / storage_key).exists()
    assert mclient.get(drop["image_url"], headers=moderator).status_code == 404

    again = mclient.post(f"/admin/moderation/reviews/{keep['id']}/reject", headers=moderator)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "review_already_decided")
    assert _reviews(mclient, moderated.moderator_key, cust.account_id) == []
    decided = _reviews(mclient, moderated.moderator_key, cust.account_id, status="all")
    assert sorted(rv["status"] for rv in decided) == ["approved", "rejected"]
    assert {rv["decided_by"] for rv in decided} == {approved.json()["decided_by"]}
    assert [rv["id"] for rv in _reviews(mclient, moderated.moderator_key, cust.account_id, status="rejected")] == \
        [drop["id"]]
    job = mclient.get(f"/v1/generations/{body['id']}", headers=cust.headers).json()
    assert [o["status"] for o in job["outputs"]] == ["delivered", "removed"]
    assert job["outputs"][0]["url"] is not None
    # Released after review: delivered now, so settled like any delivery — one ledger row, one
    # image of usage; the rejected one is never charged.
    assert job["usage"]["images"] == 1 and _ledger_rows(moderated, body["id"]) == 1
    assert mclient.get("/v1/usage", headers=cust.headers).json()["account"]["day"]["used"] == 1

    audit = mclient.get("/admin/moderation/audit", params={"target_type": "review"}, headers=moderator).json()["data"]
    mine = [(a["action"], a["target_id"]) for a in audit if a["target_id"] in (keep["id"], drop["id"])]
    assert sorted(mine) == sorted([("review.view_image", keep["id"]), ("review.approve", keep["id"]),
                                   ("review.reject", drop["id"])])
    moderator_key_id = mclient.get("/admin/moderation/audit", params={"action": "review.approve",
                                                                      "target_id": keep["id"]},
                                   headers=moderator).json()["data"][0]
    assert moderator_key_id["actor_key_id"] != cust.key_id and moderator_key_id["created_at"]
    assert moderator_key_id["detail"]["image_id"] == image_ids[0]


def test_withheld_images_of_questionable_accounts_are_charged_only_once_released(moderated, mclient) -> None:
    cust = moderated.customer(mclient, max_rating="questionable")
    body = generate(mclient, cust.headers, "a lighthouse", response_format="url").json()
    assert body["data"][0]["status"] == "withheld" and body["usage"]["images"] == 0
    assert _ledger_rows(moderated, body["id"]) == 0
    usage = mclient.get("/v1/usage", headers=cust.headers).json()["account"]["day"]
    assert (usage["used"], usage["reserved"]) == (0, 0)
    [review] = _reviews(mclient, moderated.moderator_key, cust.account_id)
    approved = mclient.post(f"/admin/moderation/reviews/{review['id']}/approve", headers=auth(moderated.moderator_key))
    assert approved.status_code == 200, approved.text
    assert _ledger_rows(moderated, body["id"]) == 1
    assert mclient.get("/v1/usage", headers=cust.headers).json()["account"]["day"]["used"] == 1


def test_account_threshold_above_the_score_delivers(moderated, mclient) -> None:
    cust = moderated.customer(mclient, review_threshold=0.95)
    body = generate(mclient, cust.headers, "a lighthouse").json()
    assert body["data"][0]["status"] == "delivered" and body["data"][0]["b64_json"]
    assert body["usage"]["images"] == 1
    assert _reviews(mclient, moderated.moderator_key, cust.account_id) == []


def test_a1111_never_returns_withheld_images(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    r = mclient.post("/sdapi/v1/txt2img", json={"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64},
                     headers=cust.headers)
    assert r.status_code == 200, r.text
    assert r.json()["images"] == []
    assert len(_reviews(mclient, moderated.moderator_key, cust.account_id)) == 1


def test_moderation_endpoints_require_the_moderator_scope(moderated, mclient, make_customer) -> None:
    admin_only = mclient.post(f"/admin/accounts/{moderated.customer(mclient).account_id}/keys",
                              json={"scopes": ["admin"]}, headers=auth(moderated.admin_key)).json()["key"]
    generate_only = moderated.customer(mclient).key
    routes = [("GET", "/admin/moderation/incidents"), ("GET", "/admin/moderation/reviews"),
              ("GET", "/admin/moderation/audit"), ("GET", "/admin/moderation/reviews/rev_x/image"),
              ("POST", "/admin/moderation/reviews/rev_x/approve"), ("POST", "/admin/moderation/reviews/rev_x/reject")]
    for key in (admin_only, generate_only):
        for method, path in routes:
            r = mclient.request(method, path, headers=auth(key))
            assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_scope"), (method, path)
    for method, path in routes:
        assert mclient.request(method, path).status_code == 401
    moderator = auth(moderated.moderator_key)
    assert mclient.post("/admin/moderation/reviews/rev_x/approve", headers=moderator).status_code == 404
    # Opt-outs are the admins' registry; a moderator-only key cannot change it.
    r = mclient.post("/admin/optouts", json={"name": "Someone Else"}, headers=moderator)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_scope")


def test_classifier_loader_checks_the_file(tmp_path: Path) -> None:
    classifier = load_classifier(write_fake_classifier(tmp_path, score=0.25), input_size=32)
    from PIL import Image

    assert classifier.score([Image.new("RGB", (64, 64))] * 3) == pytest.approx([0.25] * 3)
    with pytest.raises(ClassifierError, match="not found"):
        load_classifier(tmp_path / "missing.pt2")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(ClassifierError, match="unknown format"):
        load_classifier(tmp_path / "weights.bin")
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(ClassifierError, match="could not be loaded"):
        load_classifier(tmp_path / "broken.pt")


def test_deleting_a_job_withdraws_its_pending_reviews(moderated, mclient) -> None:
    cust = moderated.customer(mclient)
    body = generate(mclient, cust.headers, "a quiet harbour", n=1, seed=8).json()
    [image] = body["data"]
    assert image["status"] == "withheld"
    [review] = _reviews(mclient, moderated.moderator_key, cust.account_id)

    assert mclient.delete(f"/v1/generations/{body['id']}", headers=cust.headers).status_code == 204

    assert _reviews(mclient, moderated.moderator_key, cust.account_id) == []
    [withdrawn] = _reviews(mclient, moderated.moderator_key, cust.account_id, status="withdrawn")
    assert withdrawn["id"] == review["id"] and withdrawn["decided_at"] is not None
    assert mclient.get(review["image_url"], headers=auth(moderated.moderator_key)).status_code == 404
    late = mclient.post(f"/admin/moderation/reviews/{review['id']}/approve", headers=auth(moderated.moderator_key))
    assert (late.status_code, late.json()["error"]["code"]) == (409, "review_already_decided")
    assert _ledger_rows(moderated, body["id"]) == 0


def test_an_init_image_the_classifier_flags_ends_its_job_uncharged(moderated, mclient) -> None:
    import base64
    import io

    from PIL import Image

    cust = moderated.customer(mclient)  # threshold 0.8 < the fake classifier's 0.9: every image is flagged
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    r = mclient.post("/v1/generations", headers=cust.headers,
                     json={"prompt": "a lighthouse", "steps": 2, "init_image": base64.b64encode(buffer.getvalue())
                           .decode()})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    from moderation_deploy import eventually

    eventually(lambda: mclient.get(f"/v1/generations/{job_id}", headers=cust.headers).json()["status"] == "failed",
               timeout=60)
    job = mclient.get(f"/v1/generations/{job_id}", headers=cust.headers).json()
    assert job["error"]["code"] == "content_policy_violation" and job["usage"]["images"] == 0
    assert _ledger_rows(moderated, job_id) == 0
    # A lenient account's init image passes.
    lenient = moderated.customer(mclient, review_threshold=1.0)
    ok = mclient.post("/v1/images/generations", headers=lenient.headers,
                      json={"prompt": "a lighthouse", "steps": 2, "response_format": "b64_json",
                            "init_image": base64.b64encode(buffer.getvalue()).decode()})
    assert ok.status_code == 200, ok.text
