"""The recommender app over real HTTP: every endpoint, known and history-only users, served results
equal to the pyfunc model's and the in-process retrieval, auth, bad input and the LLM fallback."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from bridgerec.retrieval.index import exact_topk


def _users(served, n=12) -> list[str]:
    users = served["data"].users()["user_id"].astype(str).tolist()
    return users[:: max(1, len(users) // n)][:n]


def _post(served, path: str, body: dict, **kw) -> httpx.Response:
    return served["client"].post(path, json=body, **kw)


def test_health_ready_docs_and_version(served):
    c = served["client"]
    assert httpx.get(served["url"] + "/healthz").json() == {"status": "ok"}  # open without a token
    ready = httpx.get(served["url"] + "/readyz").json()
    assert ready["ready"] is True and ready["deployments"] == {"retriever": "ok", "grounder": "ok"}
    assert ready["model"]["name"] == "serve-test" and ready["model"]["version"] == "1"
    assert ready["model"]["run_id"] == served["summary"].run_id
    schema = c.get("/openapi.json").json()
    for path in ("/v1/recommend", "/v1/similar-items", "/v1/ground", "/v1/items/{item_id}", "/healthz", "/readyz"):
        assert path in schema["paths"], path
    assert c.get("/docs").status_code == 200


def test_served_equals_pyfunc_and_in_process_retrieval(served):
    """Exact index: the same ids and scores as the logged pyfunc model and a brute-force search."""
    users = _users(served)
    mlflow.set_tracking_uri(served["uri"])
    pyfunc = mlflow.pyfunc.load_model("models:/serve-test@champion")
    expected = pyfunc.predict(pd.DataFrame({"user_id": users, "k": np.full(len(users), 7, dtype=np.int64)}))
    from bridgerec.serving.bundle import bundle_dir, load_catalog, load_vectors

    root, version = bundle_dir("models:/serve-test@champion", served["uri"])
    catalog = load_catalog(root, version)
    user_emb, item_emb = load_vectors(root)
    for user in users:
        r = _post(served, "/v1/recommend", {"user_id": user, "k": 7})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["strategy"] == "domain" and body["fallback"] is False
        assert body["model"]["version"] == "1" and body["request_id"] == r.headers["x-request-id"]
        ref = expected[expected["user_id"] == user]
        assert [i["item_id"] for i in body["items"]] == ref["item_id"].tolist()
        assert [i["title"] for i in body["items"]] == ref["title"].tolist()
        np.testing.assert_allclose([i["score"] for i in body["items"]], ref["score"], rtol=1e-4, atol=1e-5)
        uid = catalog.uid(user)
        seen = catalog.seen(uid)
        ids, scores = exact_topk(user_emb[uid : uid + 1], item_emb, 7, "ip", np.array([0, len(seen)]), seen)
        assert [i["item_id"] for i in body["items"]] == catalog.item_ids[ids[0]].tolist()
        assert not set(catalog.iids([i["item_id"] for i in body["items"]])[0].tolist()) & set(seen.tolist())


def test_history_only_user_is_embedded_from_history(served):
    from bridgerec.serving.bundle import bundle_dir, load_catalog, load_vectors

    root, version = bundle_dir("models:/serve-test@champion", served["uri"])
    catalog = load_catalog(root, version)
    _, item_emb = load_vectors(root)
    history = catalog.item_ids[[3, 10, 17]].tolist()
    r = _post(served, "/v1/recommend", {"history": history, "k": 5})
    assert r.status_code == 200, r.text
    got = [i["item_id"] for i in r.json()["items"]]
    query = item_emb[[3, 10, 17]].mean(0, keepdims=True)
    ids, _ = exact_topk(query, item_emb, 5, "ip", np.array([0, 3]), np.array([3, 10, 17]))
    assert got == catalog.item_ids[ids[0]].tolist()
    assert not set(got) & set(history)
    # an unknown user with a history is served the same way
    r2 = _post(served, "/v1/recommend", {"user_id": "someone-new", "history": history, "k": 5})
    assert [i["item_id"] for i in r2.json()["items"]] == got


def test_similar_items_ground_and_item_lookup(served):
    data = served["data"]
    items = data.items()
    item_id, title = str(items["item_id"][5]), str(items["title"][5])
    r = _post(served, "/v1/ground", {"text": title, "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["item_id"] == item_id  # its own title grounds to it
    assert r.json()["items"][0]["title"] == title
    sim = _post(served, "/v1/similar-items", {"item_id": item_id, "k": 4}).json()
    assert len(sim["items"]) == 4 and item_id not in [i["item_id"] for i in sim["items"]]
    scores = [i["score"] for i in sim["items"]]
    assert scores == sorted(scores, reverse=True)
    got = served["client"].get(f"/v1/items/{item_id}").json()
    assert got["title"] == title and got["popularity"] > 0


@pytest.mark.parametrize("body, status, reason", [
    ({"user_id": "nobody"}, 404, "unknown user_id 'nobody'"),
    ({}, 422, "send a user_id or a history"),
    ({"user_id": "USER", "k": 0}, 422, "k must lie in [1, 100]"),
    ({"user_id": "USER", "k": 101}, 422, "k must lie in [1, 100]"),
    ({"history": []}, 422, "history is empty"),
    ({"history": ["ITEM"] * 201}, 422, "the limit is 200"),
    ({"history": ["no-such-item"]}, 422, "unknown item ids: ['no-such-item']"),
    ({"user_id": "USER", "exclude": ["nope"]}, 422, "exclude holds unknown item ids"),
    ({"user_id": "USER", "strategy": "magic"}, 422, "unknown serving strategy 'magic'"),
    ({"user_id": "USER", "k": "ten"}, 422, "k: Input should be a valid integer"),
    ({"user_id": "USER", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
])
def test_bad_input_gets_4xx_with_reason(served, body, status, reason):
    user, item = _users(served, 1)[0], str(served["data"].items()["item_id"][0])
    body = {k: (user if v == "USER" else [item if x == "ITEM" else x for x in v] if isinstance(v, list) else v)
            for k, v in body.items()}
    r = _post(served, "/v1/recommend", body)
    assert r.status_code == status, r.text
    assert reason in r.json()["detail"]
    assert r.json()["request_id"]


def test_malformed_json_oversized_body_and_unknown_items(served):
    c = served["client"]
    r = c.post("/v1/recommend", content=b'{"user_id": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON decode error" in r.json()["detail"]
    r = c.post("/v1/recommend", content=b"x" * 70_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 65536" in r.json()["detail"]
    assert c.get("/v1/items/no-such-item").status_code == 404
    assert _post(served, "/v1/similar-items", {"item_id": "no-such-item"}).status_code == 404
    assert _post(served, "/v1/ground", {"text": "   "}).status_code == 422


def test_auth(served):
    url, body = served["url"], {"user_id": _users(served, 1)[0], "k": 2}
    r = httpx.post(url + "/v1/recommend", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert served["token"] not in r.text
    r = httpx.post(url + "/v1/recommend", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = httpx.post(url + "/v1/recommend", json=body, headers={"Authorization": f"Basic {served['token']}"})
    assert r.status_code == 401
    assert httpx.get(url + "/v1/items/x").status_code == 401
    assert httpx.post(url + "/v1/recommend", json=body, headers={"Authorization": f"Bearer {served['token']}"}).status_code == 200


@pytest.mark.parametrize("strategy, reason", [("slow-llm", "slow-llm exceeded its 0.5 s budget"),
                                              ("broken-llm", "broken-llm failed: LookupError: this app has no llm deployment")])
def test_llm_strategy_falls_back_to_domain(served, strategy, reason):
    user = _users(served, 1)[0]
    domain = _post(served, "/v1/recommend", {"user_id": user, "k": 5}).json()
    r = _post(served, "/v1/recommend", {"user_id": user, "k": 5, "strategy": strategy})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is True and body["strategy"] == "domain"
    assert reason in body["fallback_reason"]
    assert body["items"] == domain["items"]
    assert r.elapsed.total_seconds() < 10  # the sleeping strategy (30 s) never holds the request


def test_concurrent_requests_are_batched(served):
    users = _users(served, 32)
    with cf.ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(lambda u: _post(served, "/v1/recommend", {"user_id": u, "k": 3}).status_code, users * 4))
    assert codes == [200] * len(codes)
    from ray import serve

    stats = serve.get_deployment_handle("Retriever", "recommender").stats.remote().result()
    assert stats["max_batch"] > 1, stats  # @serve.batch searched several requests at once


def test_bdlm_strategy_serves_the_bundle_and_flags_users_unknown_at_export(served):
    from bridgerec.serving.bdlm import UNKNOWN_USER

    user = _users(served, 1)[0]
    domain = _post(served, "/v1/recommend", {"user_id": user, "k": 5}).json()
    body = _post(served, "/v1/recommend", {"user_id": user, "k": 5, "strategy": "bdlm"}).json()
    assert body["strategy"] == "bdlm" and body["fallback"] is False and body["items"] == domain["items"]
    history = served["data"].items()["item_id"].astype(str).tolist()[:3]
    r = _post(served, "/v1/recommend", {"history": history, "k": 5, "strategy": "bdlm"})
    assert r.status_code == 200, r.text
    unknown = r.json()
    assert unknown["strategy"] == "domain" and unknown["fallback"] is True and unknown["fallback_reason"] == UNKNOWN_USER
    assert unknown["items"] == _post(served, "/v1/recommend", {"history": history, "k": 5}).json()["items"]
