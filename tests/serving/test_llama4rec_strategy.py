"""The ``llama4rec`` strategy over real HTTP: a tuned Llama4Rec run's export (the session's run,
``llama4rec_run``: LoRA on the tiny backbone, its rankings parse) served by an app beside the main
one, the LLM deployment with transformers (the vLLM path of the same client is the bigrec tests').

The served list must be the in-process composition of the same pieces on the same merged model:
the domain model's candidates, the similar users' items, the prompt in its seeded shuffle, the
greedy answer, and the blend with α_u from the run's rule; the response carries α_u. The app falls
back to ``domain`` when its LLM deployment is down.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP, PREFIX = "recommender-l4r", "/l4r"
ALPHA1, ALPHA2 = 0.9, 0.5  # over the run's chosen weights: the LLM's order must be able to move the list
K = 8


@pytest.fixture(scope="module")
def l4r_export(llama4rec_run, llama4rec_cfg, tmp_path_factory) -> str:
    from bridgerec.workflows.llama4rec import export_llama4rec

    return export_llama4rec(llama4rec_run[0], llama4rec_cfg, str(tmp_path_factory.mktemp("llama4rec-export")))


@pytest.fixture(scope="module")
def backbone(llm_config, tiny_dataset):
    from bridgerec.data.dataset import DatasetDir
    from bridgerec.llm.backbone import resolve_backbone

    return resolve_backbone(llm_config.llm, llm_config.work_dir, DatasetDir(tiny_dataset))


@pytest.fixture(scope="module")
def l4r_app(served, backbone, llm_config, l4r_export):
    from ray import serve

    from bridgerec.serving.app import DeploymentOptions, LLMArgs, RecommenderArgs, build_app
    from bridgerec.serving.llama4rec import apply_llama4rec_run

    keys = ("dtype", "max_model_len", "hf_batch_size")
    settings = {k: getattr(llm_config.llm, k) for k in keys}
    small = DeploymentOptions(num_replicas=1, num_cpus=0.25)
    ingress = DeploymentOptions(num_replicas=1, num_cpus=0.25, runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    args = RecommenderArgs(model="models:/serve-test@champion", tracking_uri=served["uri"], auth_token=served["token"],
                           retriever=small, grounding=False, ingress=ingress,
                           strategies={"llama4rec-llm-down": "support_strategies:LLAMA4REC_LLM_DOWN"},
                           strategy_args={"llama4rec": {"run": l4r_export, "alpha1": ALPHA1, "alpha2": ALPHA2}},
                           llm=LLMArgs(model=backbone.path, engine="hf", settings={**settings, "num_cpus": 0.5}),
                           llm_budget_s=60.0)
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    try:
        yield {"args": apply_llama4rec_run(args, log=lambda m: None), "client": served["client"]}
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def merged(l4r_app, llm_config):
    """The merged model the LLM deployment serves, in-process (transformers, greedy)."""
    from bridgerec.llm.engine import build_engine
    from bridgerec.serving.llm import resolve_llm

    path = resolve_llm(l4r_app["args"].llm).path
    assert "merged-" in os.path.basename(path)
    engine = build_engine(llm_config.llm, path, engine="hf")
    yield engine, path
    engine.close()


@pytest.fixture(scope="module")
def catalog(served):
    from bridgerec.serving.bundle import bundle_dir, load_catalog

    return load_catalog(*bundle_dir("models:/serve-test@champion", served["uri"]))


def _expected(catalog, merged, settings, uid, domain_ids):
    """In-process: the prompt, the greedy answer of the merged model and the blend."""
    from bridgerec.llm.backbone import load_tokenizer
    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import PLAIN, ItemView, engine_text
    from bridgerec.methods.llama4rec import to_domain_positions, token_counter
    from bridgerec.methods.llama4rec_core import parse_ranking
    from bridgerec.methods.llama4rec_data import nearest_users, render, shown_prompt, similar_items
    from bridgerec.serving.bundle import load_vectors
    from bridgerec.serving.llama4rec import rerank_candidates

    engine, path = merged
    users, _ = load_vectors(catalog.root)
    known = catalog.history(uid).tolist()
    sims = nearest_users(users, users[[uid]], settings.n_similar, np.asarray([uid]))[0]
    similar = similar_items(catalog.history_indptr, catalog.history_items, sims, settings.similar_history, set(known))
    dom = domain_ids[:settings.n_candidates]
    p = render(shown_prompt(uid, [uid], known[-settings.history_len:], similar, dom, settings.seed),
               lambda i: ItemView(int(i), str(catalog.titles[i])), augment=settings.prompt_aug,
               count=token_counter(load_tokenizer(path)), max_tokens=settings.max_prompt_tokens)
    text = engine.generate([engine_text(p.text, PLAIN)], GenerationParams(max_tokens=settings.max_new_tokens,
                                                                         temperature=0.0, stop=("\n",)))[0].text
    order = to_domain_positions(p, parse_ranking(text, len(p.candidates)))
    return rerank_candidates(domain_ids, order, settings.weight(len(known)), settings.n_candidates)[0], text.strip()


def _post(client, body):
    r = client.post(f"{PREFIX}/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_llama4rec_reranks_the_domain_candidates_with_the_users_alpha(l4r_app, merged, catalog, served, llama4rec_run):
    from bridgerec.methods.llama4rec_core import AlphaRule
    from bridgerec.serving.llama4rec import Llama4RecSettings

    s = Llama4RecSettings.parse(l4r_app["args"].strategy_args["llama4rec"])
    res = llama4rec_run[0]
    run_rule = AlphaRule.from_counts(res.n_train, res.choice["alpha1"], res.choice["alpha2"])
    assert (s.alpha1, s.alpha2, s.ell_min, s.ell_max) == (ALPHA1, ALPHA2, run_rule.ell_min, run_rule.ell_max)
    assert (s.n_candidates, s.history_len, s.max_prompt_tokens) == (5, 5, 200)  # the run's prompt settings
    c, moved, alphas = l4r_app["client"], 0, set()
    for user in served["data"].users()["user_id"].astype(str).tolist()[:8]:
        body = _post(c, {"user_id": user, "k": K, "strategy": "llama4rec"})
        assert body["strategy"] == "llama4rec" and body["fallback"] is False, body
        uid = catalog.uid(user)
        n_known = len(catalog.history(uid))
        alpha = body["details"]["alpha_u"]
        assert alpha == pytest.approx(float(AlphaRule(ALPHA1, ALPHA2, s.ell_min, s.ell_max).alpha(n_known)[0]))
        assert 0.0 <= alpha <= 1.0 and body["details"]["known_items"] == n_known
        alphas.add(round(alpha, 6))
        domain = [i["item_id"] for i in _post(c, {"user_id": user, "k": K, "strategy": "domain"})["items"]]
        got = [i["item_id"] for i in body["items"]]
        assert sorted(got[:5]) == sorted(domain[:5]) and got[5:] == domain[5:]  # the candidates reranked, the rest kept
        want, text = _expected(catalog, merged, s, uid, [int(v) for v in catalog.iids(domain)[0]])
        assert body["generated"] == text
        assert got == [str(catalog.item_ids[i]) for i in want][:K]
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        moved += got != domain
    assert moved >= 1  # the LLM's order moved at least one list away from the domain model's
    assert len(alphas) >= 2  # users with different known counts get different weights


@pytest.mark.slow
def test_llama4rec_serves_a_user_described_by_history(l4r_app, catalog):
    hist = [str(catalog.item_ids[i]) for i in catalog.history(3)[-4:]]
    body = _post(l4r_app["client"], {"history": hist, "k": 5, "strategy": "llama4rec"})
    assert body["strategy"] == "llama4rec" and body["fallback"] is False, body
    assert body["details"]["known_items"] == 4 and not set(hist) & {i["item_id"] for i in body["items"]}


@pytest.mark.slow
def test_llama4rec_falls_back_when_the_llm_is_unavailable(l4r_app, served):
    c = l4r_app["client"]
    user = served["data"].users()["user_id"].astype(str)[1]
    body = _post(c, {"user_id": user, "k": 5, "strategy": "llama4rec-llm-down"})
    assert body["fallback"] is True and body["strategy"] == "domain" and "unavailable" in body["fallback_reason"], body
    assert body["details"] is None
    domain = _post(c, {"user_id": user, "k": 5, "strategy": "domain"})
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in domain["items"]]
    assert _post(c, {"user_id": user, "k": 5, "strategy": "llama4rec"})["fallback"] is False


def test_rerank_keeps_the_items_past_the_candidates_in_domain_order():
    from bridgerec.serving.llama4rec import rerank_candidates

    ids, scores = rerank_candidates([10, 11, 12, 13, 14], [2, 1, 0], 1.0, 3)
    assert ids == [12, 11, 10, 13, 14] and scores == sorted(scores, reverse=True)
    assert rerank_candidates([10, 11, 12, 13], None, 0.9, 3)[0] == [10, 11, 12, 13]  # unparsed: domain order
    assert rerank_candidates([10, 11, 12], [2, 1, 0], 0.0, 3)[0] == [10, 11, 12]  # alpha 0: domain order


def test_llama4rec_settings_errors_name_the_key(tmp_path):
    from bridgerec._config_base import ConfigError
    from bridgerec.serving.app import LLMArgs, RecommenderArgs
    from bridgerec.serving.exports import one_adapter
    from bridgerec.serving.llama4rec import Llama4RecSettings, apply_llama4rec_run

    with pytest.raises(ConfigError, match="unknown key.*n_candidate"):
        Llama4RecSettings.parse({"n_candidate": 5, "alpha": 0.5})
    with pytest.raises(ConfigError, match="no weight"):
        Llama4RecSettings.parse({"n_candidates": 5})
    with pytest.raises(ConfigError, match="alpha1, alpha2, ell_min and ell_max together"):
        Llama4RecSettings.parse({"alpha1": 0.5})
    with pytest.raises(ConfigError, match="alpha must be in"):
        Llama4RecSettings.parse({"alpha": 1.5})
    args = RecommenderArgs(model=str(tmp_path), strategy_args={"llama4rec": {"run": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="strategy_args.llama4rec.run=.*neither runs:/RUN nor a directory"):
        apply_llama4rec_run(args, log=lambda m: None)
    with pytest.raises(ConfigError, match="no llama4rec.json"):
        apply_llama4rec_run(args.model_copy(update={"strategy_args": {"llama4rec": {"run": str(tmp_path)}}}),
                            log=lambda m: None)
    plain = RecommenderArgs(model=str(tmp_path))
    assert "llama4rec" not in apply_llama4rec_run(plain, log=lambda m: None).strategies  # listed only when configured
    fixed = apply_llama4rec_run(plain.model_copy(update={"strategy_args": {"llama4rec": {"alpha": 0.3}}}))
    assert fixed.strategies["llama4rec"] == "bridgerec.serving.llama4rec:LLAMA4REC"
    two = RecommenderArgs(model=str(tmp_path), llm=LLMArgs(model=str(tmp_path)),
                          strategy_args={"llama4rec": {"run": "runs:/a"}, "bigrec": {"run": "runs:/b"}})
    with pytest.raises(ConfigError, match="one run's adapter"):
        one_adapter(two)


@pytest.mark.slow
def test_a_tiny_run_needs_its_backbone_directory(l4r_export, tmp_path):
    from bridgerec._config_base import ConfigError
    from bridgerec.serving.app import RecommenderArgs
    from bridgerec.serving.llama4rec import apply_llama4rec_run

    args = RecommenderArgs(model=str(tmp_path), strategy_args={"llama4rec": {"run": l4r_export}})
    with pytest.raises(ConfigError, match="tiny one built from its dataset; give llm.model"):
        apply_llama4rec_run(args, log=lambda m: None)
