"""The app with a real LLM deployment: vLLM through ray.serve.llm (the tiny backbone, float32),
the ``generate-ground`` and ``bigrec`` strategies over real HTTP, and the transformers (``hf``) deployment.

The LLM serves a bigrec run's export (``strategy_args.bigrec.run``: a LoRA adapter, written by
:func:`~bridgerec.workflows.bigrec.export_bigrec`, with its gamma, history length and title length):
the adapter is merged into the backbone once. Its weights are seeded random LoRA updates, not a
tuning run (that one is exported through MLflow in ``tests/llm/test_bigrec_workflow.py``); they
change what the backbone writes, so serving the merged model is visible in the generations.

The served generation must equal greedy transformers generation of the merged model on the same
prompt rendered in-process (one prompt module, same tokens), and the served items must be the
Grounder's nearest items to the generated title with the user's known items left out.
"""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import torch

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # support_strategies lives there
APP, PREFIX = "recommender-llm", "/llm"
BIGREC_GAMMA = 4.0


@pytest.fixture(scope="module")
def settings(llm_config) -> dict:
    """The session's test LLM settings (float32 so vLLM and transformers decode alike, a 64 MiB KV cache)."""
    keys = ("dtype", "max_model_len", "vllm_multiprocessing", "kv_cache_memory_bytes", "hf_batch_size")
    return {k: getattr(llm_config.llm, k) for k in keys}


@pytest.fixture(scope="module")
def backbone(served, llm_config):
    from bridgerec.llm.backbone import resolve_backbone

    return resolve_backbone(llm_config.llm, llm_config.work_dir, served["data"])


@pytest.fixture(scope="module")
def bigrec_export(backbone, llm_config, tmp_path_factory) -> str:
    """A bigrec export of a LoRA adapter on the tiny backbone (lora_B seeded at N(0, 0.05^2): greedy
    titles change for most prompts and stay text), gamma BIGREC_GAMMA, history 8, titles <= 24 tokens."""
    from transformers import AutoModelForCausalLM

    from bridgerec.config import Config
    from bridgerec.llm.lora import apply_lora, save_adapter
    from bridgerec.workflows.bigrec import BIGRecResult, export_bigrec

    cfg = Config.model_validate({**llm_config.model_dump(), "method": {
        "name": "bigrec", "bigrec": {"history_len": 8, "max_new_tokens": 24, "gamma": BIGREC_GAMMA}}})
    model = apply_lora(AutoModelForCausalLM.from_pretrained(backbone.path, torch_dtype=torch.float32), cfg.llm.lora)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    adapter = save_adapter(model, str(tmp_path_factory.mktemp("adapter")))
    res = BIGRecResult(test=None, test_grounding=None, valid=None, gamma=BIGREC_GAMMA, gamma_table={}, validity={},
                       users_per_s={}, sft={"history": []}, adapter_dir=adapter)
    return export_bigrec(res, cfg, str(tmp_path_factory.mktemp("bigrec-export")))


@pytest.fixture(scope="module")
def llm_app(served, backbone, settings, bigrec_export):
    """A second app on the shared Serve instance, beside the main one: same bundle, plus the LLM
    serving the bigrec export."""
    from ray import serve

    from bridgerec.serving.app import DeploymentOptions, LLMArgs, RecommenderArgs, build_app
    from bridgerec.serving.bigrec import apply_bigrec_run

    small = DeploymentOptions(num_replicas=1, num_cpus=0.25)
    ingress = DeploymentOptions(num_replicas=1, num_cpus=0.25, runtime_env={"env_vars": {"PYTHONPATH": TESTS}})
    args = RecommenderArgs(model="models:/serve-test@champion", tracking_uri=served["uri"], auth_token=served["token"],
                           retriever=small, grounder=small, ingress=ingress,
                           strategies={"bigrec-llm-down": "support_strategies:BIGREC_LLM_DOWN"},
                           strategy_args={"bigrec": {"run": bigrec_export}},
                           llm=LLMArgs(model=backbone.path, engine="vllm", settings={**settings, "num_cpus": 1.0}),
                           llm_budget_s=60.0)
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    try:
        yield {"args": apply_bigrec_run(args, log=lambda m: None), "client": served["client"]}
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def served_model(llm_app) -> str:
    """The directory the LLM deployment loads: the backbone merged with the export's adapter (cached)."""
    from bridgerec.serving.llm import resolve_llm

    path = resolve_llm(llm_app["args"].llm).path
    assert "merged-" in os.path.basename(path)
    return path


@pytest.fixture(scope="module")
def hf(served_model, llm_config):
    from bridgerec.llm.engine import build_engine

    engine = build_engine(llm_config.llm, served_model, engine="hf")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def catalog(served):
    from bridgerec.serving.bundle import bundle_dir, load_catalog

    return load_catalog(*bundle_dir("models:/serve-test@champion", served["uri"]))


def _expected_generation(hf, catalog, history: list[int], max_tokens: int) -> str:
    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import PLAIN, ItemView, engine_text, next_item_prompt, parse_next_item

    views = [ItemView(int(i), str(catalog.titles[i])) for i in history]
    prompt = engine_text(next_item_prompt(views), PLAIN)  # the tiny backbone has no chat template
    return parse_next_item(hf.generate([prompt], GenerationParams(max_tokens=max_tokens))[0].text)


def _grounded(client, title: str, k: int, excluded: set[str]) -> list[str]:
    r = client.post(f"{PREFIX}/v1/ground", json={"text": title, "k": min(100, k + len(excluded))})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"] if i["item_id"] not in excluded][:k]


def test_ready_and_strategies(llm_app, served):
    c = llm_app["client"]
    ready = httpx.get(served["url"] + PREFIX + "/readyz", timeout=60).json()
    assert ready["ready"] is True and ready["deployments"] == {"retriever": "ok", "grounder": "ok", "llm": "ok"}
    listed = c.get(f"{PREFIX}/v1/strategies").json()
    assert "generate-ground" in listed["strategies"] and "domain" in listed["strategies"]
    main = c.get("/v1/strategies").json()  # the app without an LLM says why it cannot
    assert "generate-ground" not in main["strategies"] and "llm" in main["unavailable"]["generate-ground"]


def test_generate_ground_known_users(llm_app, hf, catalog, served):
    """Served generation == in-process transformers greedy on the same prompt; items == grounding
    of that title minus the user's known items."""
    c = llm_app["client"]
    users = served["data"].users()["user_id"].astype(str).tolist()[:4]
    titles = set()
    for user in users:
        r = c.post(f"{PREFIX}/v1/recommend", json={"user_id": user, "k": 5, "strategy": "generate-ground"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["strategy"] == "generate-ground" and body["fallback"] is False, body
        uid = catalog.uid(user)
        expected = _expected_generation(hf, catalog, catalog.history(uid, 8).tolist(), 24)
        assert expected and body["generated"] == expected
        known = {str(catalog.item_ids[i]) for i in catalog.seen(uid)}
        got = [i["item_id"] for i in body["items"]]
        assert len(got) == 5 and not set(got) & known
        assert got == _grounded(c, body["generated"], 5, known)
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        titles.add(body["generated"])
    assert len(titles) >= 2, titles  # different histories, different generations


def test_generate_ground_history_only(llm_app, hf, catalog):
    c = llm_app["client"]
    hist = [int(i) for i in catalog.history(0)[-3:]]
    body = {"history": [str(catalog.item_ids[i]) for i in hist], "k": 4, "strategy": "generate-ground"}
    r = c.post(f"{PREFIX}/v1/recommend", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["fallback"] is False and out["generated"] == _expected_generation(hf, catalog, hist, 24)
    sent = set(body["history"])
    assert [i["item_id"] for i in out["items"]] == _grounded(c, out["generated"], 4, sent)


def _bigrec_expected(catalog, title: str, known: set[int], gamma: float, k: int) -> list[int]:
    """In-process: every item's L2 distance to the title (the bundle's encoder), known items out,
    BIGRec's reweighting over the whole catalog (the Grounder's shortlist covers it here)."""
    from bridgerec.llm.config import EncoderConfig
    from bridgerec.llm.encoder import TextEncoder
    from bridgerec.methods.bigrec_core import grounding_distances, reweighted_scores, row_minmax

    enc = TextEncoder(EncoderConfig(**(catalog.meta["grounding"].get("encoder") or {})))
    keep = np.asarray([i for i in range(catalog.n_items) if i not in known])
    dist = grounding_distances(enc.encode([title]), enc.encode([str(t) for t in catalog.titles[keep]]))
    prior = row_minmax(torch.tensor(catalog.popularity[None, :], dtype=torch.float32))[:, keep]
    order = torch.argsort(-reweighted_scores(dist, prior, gamma)[0], stable=True)[:k]
    return [int(keep[i]) for i in order]


def test_bigrec_strategy_reweights_the_grounded_title(llm_app, hf, catalog, served):
    """``bigrec`` over HTTP: the same title as generate-ground (same prompt, greedy), its items the
    in-process BIGRec ranking of that title with the popularity prior (gamma from strategy_args)."""
    c = llm_app["client"]
    differs = 0
    for user in served["data"].users()["user_id"].astype(str).tolist()[:3]:
        r = c.post(f"{PREFIX}/v1/recommend", json={"user_id": user, "k": 5, "strategy": "bigrec"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["strategy"] == "bigrec" and body["fallback"] is False, body
        uid = catalog.uid(user)
        assert body["generated"] == _expected_generation(hf, catalog, catalog.history(uid, 8).tolist(), 24)
        known = {int(i) for i in catalog.seen(uid)}
        got = [i["item_id"] for i in body["items"]]
        want = [str(catalog.item_ids[i]) for i in _bigrec_expected(catalog, body["generated"], known, BIGREC_GAMMA, 5)]
        assert got == want
        plain = [str(catalog.item_ids[i]) for i in _bigrec_expected(catalog, body["generated"], known, 0.0, 5)]
        differs += got != plain
    assert differs >= 1  # the prior moved at least one list away from plain grounding


def test_the_bigrec_runs_adapter_is_what_is_served(llm_app, backbone, llm_config, catalog, served):
    """The app was given the export only: its gamma reached the strategy, and the titles it serves are
    the merged model's, not the plain backbone's (they differ for some users)."""
    from bridgerec.llm.engine import build_engine

    assert llm_app["args"].strategy_args["bigrec"]["gamma"] == BIGREC_GAMMA
    assert (llm_app["args"].llm.history_len, llm_app["args"].llm.max_tokens) == (8, 24)
    users = served["data"].users()["user_id"].astype(str).tolist()[:6]
    got = [llm_app["client"].post(f"{PREFIX}/v1/recommend", json={"user_id": u, "k": 3, "strategy": "bigrec"}).json()
           for u in users]
    assert all(g["strategy"] == "bigrec" for g in got), got
    with build_engine(llm_config.llm, backbone.path, engine="hf") as plain:
        base = [_expected_generation(plain, catalog, catalog.history(catalog.uid(u), 8).tolist(), 24) for u in users]
    assert sum(g["generated"] != b for g, b in zip(got, base)) >= 1, (got, base)


def test_bigrec_falls_back_when_the_llm_is_unavailable(llm_app, served):
    c = llm_app["client"]
    user = served["data"].users()["user_id"].astype(str)[1]
    down = c.post(f"{PREFIX}/v1/recommend", json={"user_id": user, "k": 5, "strategy": "bigrec-llm-down"})
    assert down.status_code == 200, down.text
    body = down.json()
    assert body["fallback"] is True and body["strategy"] == "domain" and "unavailable" in body["fallback_reason"], body
    domain = c.post(f"{PREFIX}/v1/recommend", json={"user_id": user, "k": 5, "strategy": "domain"}).json()
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in domain["items"]]
    again = c.post(f"{PREFIX}/v1/recommend", json={"user_id": user, "k": 5, "strategy": "bigrec"}).json()
    assert again["fallback"] is False  # the real strategy still answers: the outage was routed, not caused


def test_hf_deployment_generates_what_vllm_serves(served_model, hf, catalog, settings):
    """The transformers deployment (engine: hf) answers the same greedy text as the engine in-process."""
    from ray import serve

    from bridgerec.llm.engine import GenerationParams
    from bridgerec.llm.prompts import PLAIN, ItemView, engine_text, next_item_prompt
    from bridgerec.serving.llm import HFLLM

    handle = serve.run(HFLLM.bind({**settings, "model": served_model}, served_model), name="hf-llm", route_prefix=None)
    try:
        prompts = [engine_text(next_item_prompt([ItemView(int(i), str(catalog.titles[i])) for i in catalog.history(u, 5)]),
                               PLAIN) for u in range(3)]
        params = GenerationParams(max_tokens=16)
        served = [handle.generate.remote(p, params.to_dict()) for p in prompts]  # concurrent: one batch
        assert [s.result(timeout_s=120) for s in served] == [g.text for g in hf.generate(prompts, params)]
        assert handle.ping.remote().result(timeout_s=30) == "ok"
    finally:
        serve.delete("hf-llm")


def test_page_shows_the_llm_strategy(llm_app, served, tmp_path):
    """The page under the app's route prefix: history, domain, generate-ground and bigrec cards as the API answers."""
    from support_browser import check_page

    user = served["data"].users()["user_id"].astype(str)[3]
    cards = check_page(served["url"], served["token"], llm_app["client"], PREFIX, user, tmp_path, keep_screenshot=True)
    assert set(cards) == {"history", "domain", "generate-ground", "bigrec", "bigrec-llm-down"}
    assert len(cards["generate-ground"]) == 10 and len(cards["bigrec"]) == 10


def test_llm_args_errors_name_the_key(tmp_path):
    """Bad LLM settings fail when the app is built, with the key or path in the message (exit 2 in the CLI)."""
    from bridgerec._config_base import ConfigError
    from bridgerec.serving.llm import LLMArgs, resolve_llm

    with pytest.raises(ConfigError, match="llm.model: the tiny backbone"):
        resolve_llm(LLMArgs(model="tiny"))
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        resolve_llm(LLMArgs(model=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="max_model_len"):
        resolve_llm(LLMArgs(model=str(tmp_path), settings={"max_model_len": 0}))
    with pytest.raises(FileNotFoundError, match="llm.lora.adapter"):
        resolve_llm(LLMArgs(model="smollm2-135m", settings={"lora": {"adapter": str(tmp_path / "no-adapter")}}))
