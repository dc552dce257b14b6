"""BDLM: the LLM (entity tokens + LoRA) and the domain model in one module, trained jointly.

Unit tests build the module in-process on the tiny backbone; the distributed tests train it on
2 Ray Train workers under DDP, ZeRO-2 and ZeRO-3, and resume a ZeRO-3 run from its checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridgerec.config import load_config
from bridgerec.data.dataset import DatasetDir

D = 16


def _cfg(session_dir, domain_run: str, *extra: str):
    return load_config(None, [
        f"work_dir={session_dir}/work", "data.name=synthetic-tiny", "data.source.synthetic.preset=tiny",
        "data.preprocess.kcore_user=3", "data.preprocess.kcore_item=3", "llm.tiny.warmup_steps=40",
        f"model.dim={D}", "method.name=bdlm", f"method.bdlm.domain_run={domain_run}", "method.bdlm.history_len=5",
        "method.bdlm.max_length=64", "method.bdlm.llm_lr=0.005", "train.batch_size=128", "train.lr=0.01",
        "tracking.enabled=false", "train.patience=0", *extra,
    ])


@pytest.fixture(scope="module")
def data(tiny_dataset):
    return DatasetDir(tiny_dataset)


@pytest.fixture(scope="module")
def domain_npz(data, tmp_path_factory):
    """A 'pre-trained' domain model: fixed random embeddings of the dataset's users and items."""
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("bdlm") / "domain.npz"
    np.savez(path, user_emb=rng.normal(0, 0.1, (data.n_users, D)).astype(np.float32),
             item_emb=rng.normal(0, 0.1, (data.n_items, D)).astype(np.float32))
    return str(path)


@pytest.fixture(scope="module")
def cfg(session_dir, domain_npz):
    return _cfg(session_dir, domain_npz)


@pytest.fixture(scope="module")
def built(ray_session, cfg, data):
    """One BDLM module as a training worker builds it (before any step)."""
    from bridgerec.training.driver import build_method_for_dataset

    return build_method_for_dataset(cfg, data)


def _batch(model, data, cfg, n: int = 6):
    from bridgerec.training.driver import training_stream

    b = training_stream(cfg, data).take_batch(n)
    gen = torch.Generator().manual_seed(0)
    return {"uid": torch.tensor(b["uid"]), "pos": torch.tensor(b["iid"]),
            "neg": torch.randint(0, data.n_items, (n, 2), generator=gen),
            **model.batch_inputs({k: torch.tensor(np.array(v)) for k, v in b.items()})}


def test_preloaded_rows_equal_the_projected_domain_embeddings(built, cfg, domain_npz):
    from bridgerec.llm.entity import EntityProjection

    with np.load(domain_npz) as z:
        users, items = torch.from_numpy(z["user_emb"]), torch.from_numpy(z["item_emb"])
    rows = built.entity.weight.detach()  # (U + I, d_model), users first
    # rows = E @ W.T for ONE projection W of the domain width: solve for W from the rows and check the fit
    emb = torch.cat([users, items])
    w = torch.linalg.lstsq(emb, rows).solution.T  # (d_model, D)
    torch.testing.assert_close(emb @ w.T, rows, atol=1e-4, rtol=1e-4)
    proj = EntityProjection(D, rows.shape[1], seed=cfg.llm.entity_tokens.seed)
    proj.match_scale(emb, float(built.llm.get_input_embeddings().weight.std()))
    torch.testing.assert_close(proj(emb), rows)
    # the joint domain model starts from the pre-trained one (MF: the tables are the embeddings)
    torch.testing.assert_close(built.domain.user.weight.detach(), users)
    torch.testing.assert_close(built.domain.item.weight.detach(), items)


def test_stream_carries_each_events_prompt_over_earlier_training_items(built, cfg, data):
    from bridgerec.methods.bdlm import _tokenizer
    from bridgerec.models.histories import histories_for
    from bridgerec.training.driver import training_stream
    from bridgerec.llm.backbone import resolve_backbone

    b = training_stream(cfg, data).take_batch(40)
    tok, base = _tokenizer(resolve_backbone(cfg.llm, cfg.work_dir, data).path, data.n_users, data.n_items)
    indptr, items = histories_for(data, ("train",))
    assert b["prompt_ids"].shape == (40, cfg.method.bdlm.max_length)
    for u, k, ids, n in zip(b["uid"], b["pos_idx"], b["prompt_ids"], b["prompt_len"]):
        text = tok.decode(ids[len(ids) - n:])
        assert f"<u_{u}>" in text
        shown = [int(t) - base - data.n_users for t in ids if t >= base + data.n_users]
        earlier = items[indptr[u]:indptr[u] + k].tolist()
        assert shown == earlier[len(earlier) - len(shown):], "a prompt shows items other than the last earlier ones"
        assert len(shown) <= cfg.method.bdlm.history_len


def test_each_mutual_loss_reaches_only_its_side(built, cfg, data):
    import copy

    built = copy.deepcopy(built)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the sides agree exactly at init (zero mutual gradient): move both apart first
        for p in (built.entity.weight, built.domain.user.weight, built.domain.item.weight):
            p.add_(0.05 * p.std() * torch.randn(p.shape, generator=gen))
    batch = _batch(built, data, cfg)
    llm_side = [built.entity.weight, built.share.down.weight]
    lora = [p for n, p in built.llm.named_parameters() if p.requires_grad]
    domain = list(built.domain.parameters())

    def grads(loss_name):
        built.zero_grad(set_to_none=True)
        built(batch)[loss_name].backward()
        norm = lambda ps: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None)  # noqa: E731
        return norm(llm_side), norm(lora), norm(domain)

    g_llm, g_lora, g_domain = grads("mutual_llm")
    assert g_llm > 1e-3 and g_lora == 0 and g_domain == 0
    g_llm, g_lora, g_domain = grads("mutual_domain")
    assert g_llm == 0 and g_lora == 0 and g_domain > 1e-3
    g_llm, g_lora, g_domain = grads("llm")  # the LLM task trains LoRA and the entity rows, not the domain model
    assert g_lora > 0 and float(built.entity.weight.grad.abs().sum()) > 0 and g_domain == 0
    built.zero_grad(set_to_none=True)


def test_starts_as_the_pretrained_domain_model_and_recommends_with_the_enriched_embeddings(built, cfg, data):
    built.eval()
    built.begin_epoch(0)
    assert float(built.user_feature.abs().sum()) > 0
    uids = torch.arange(5)
    users, items = built.export_embeddings()
    assert users.shape[1] == items.shape[1] == 2 * D  # [e ; LLM side projected]
    torch.testing.assert_close(users[uids] @ items.T, built.full_scores(uids))
    # before any step: the LLM term is zero and the two sides agree (mutual losses ~0)
    torch.testing.assert_close(built.full_scores(uids), built.domain.full_scores(uids))
    losses = built(_batch(built, data, cfg))
    assert float(losses["mutual_llm"].detach()) < 1e-6 and float(losses["mutual_domain"].detach()) < 1e-6
    built.train()


CASES = [("ddp", 0), ("deepspeed", 2), ("deepspeed", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy,stage", CASES, ids=[f"{s}{z}" for s, z in CASES])
def test_two_workers_train_every_part_and_nothing_frozen(ray_session, session_dir, domain_npz, data, built,
                                                         strategy, stage):
    from bridgerec.training import train

    cfg = _cfg(session_dir, domain_npz, f"train.strategy={strategy}", f"train.zero_stage={stage}", "train.epochs=1",
               "train.num_workers=2", f"run_name=bdlm-{strategy}{stage}")
    init = {k: v.clone() for k, v in built.state_dict().items()}
    res = train(cfg, data)
    assert math.isfinite(res.best_metrics["train_loss"])
    for name in ("loss_rec", "loss_rec_llm", "loss_llm", "loss_mutual_llm", "loss_mutual_domain"):
        assert math.isfinite(res.best_metrics[name]), name
    trained = res.model.state_dict()
    trainable = {n for n, p in res.model.named_parameters() if p.requires_grad}
    moved = {n for n in trainable if not torch.equal(init[n], trained[n])}
    assert {"entity.weight", "share.down.weight", "share.feature.weight", "domain.user.weight",
            "domain.item.weight"} <= moved
    lora_b = [n for n in trainable if "lora_B" in n]
    assert lora_b and all(n in moved for n in lora_b), "a LoRA B matrix did not move"
    frozen = [n for n, p in res.model.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(init[n], trained[n]) for n in frozen), "a frozen LLM weight changed"


@pytest.mark.slow
def test_zero3_checkpoint_resumes_where_it_stopped(ray_session, session_dir, domain_npz, data, tmp_path):
    from bridgerec.training import train

    common = ["train.strategy=deepspeed", "train.zero_stage=3", "train.num_workers=2", "train.deterministic=true"]
    straight = train(_cfg(session_dir, domain_npz, *common, "train.epochs=2", "run_name=bdlm-z3-straight"), data)
    first = train(_cfg(session_dir, domain_npz, *common, "train.epochs=1", "run_name=bdlm-z3-resume"), data)
    again = train(_cfg(session_dir, domain_npz, *common, "train.epochs=2", "run_name=bdlm-z3-resume"), data)
    assert first.history[-1]["attempt_first_epoch"] == 1
    assert again.history[-1]["epoch"] == 2 and again.history[-1]["attempt_first_epoch"] == 2
    # the resumed second epoch is the uninterrupted run's second epoch (same weights, optimizer, features)
    for key in ("train_loss", "loss_llm", "loss_rec_llm"):
        assert again.history[-1][key] == pytest.approx(straight.history[-1][key], rel=1e-4), key
    assert again.history[-1]["train_loss"] < straight.history[0]["train_loss"]
    _export_reloads_in_a_plain_process(again.model, tmp_path)


def _export_reloads_in_a_plain_process(model, directory) -> None:
    """The serving files a run logs (``export_artifacts``) give, in a fresh interpreter with numpy
    alone, the scores the trained module computes."""
    import subprocess
    import sys

    model.export_artifacts(str(directory))
    code = ("import numpy as np, sys; d = sys.argv[1]; "
            "u = np.load(d + '/user_embeddings.npy'); i = np.load(d + '/item_embeddings.npy'); "
            "np.save(d + '/scores.npy', u[:8] @ i.T)")
    subprocess.run([sys.executable, "-c", code, str(directory)], check=True, timeout=60)
    with torch.no_grad():
        expected = model.eval().full_scores(torch.arange(8)).numpy()
    np.testing.assert_allclose(np.load(directory / "scores.npy"), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ ablations and the title task


def test_ids_as_text_prompts_carry_no_entity_token_and_the_user_rows_stay_out(ray_session, session_dir, domain_npz,
                                                                               data):
    from bridgerec.methods.bdlm import _tokenizer
    from bridgerec.llm.backbone import resolve_backbone
    from bridgerec.training.driver import build_method_for_dataset

    cfg = _cfg(session_dir, domain_npz, "method.bdlm.entity_ids=text")
    model = build_method_for_dataset(cfg, data)
    tok, base = _tokenizer(resolve_backbone(cfg.llm, cfg.work_dir, data).path, data.n_users, data.n_items, False)
    assert len(tok) == base  # the tokenizer gained nothing
    batch = _batch(model, data, cfg, n=12)
    ids, lens = batch["prompt_ids"], batch["prompt_len"]
    assert int(ids.max()) < base and int(model.user_prompts.max()) < base
    for u, row, n in zip(batch["uid"].tolist(), ids, lens):
        text = tok.decode(row[len(row) - int(n):])
        assert f"user {u}" in text and "<u_" not in text and "<i_" not in text
    with torch.no_grad():  # move the sides apart so the mutual losses have a gradient
        model.entity.weight.mul_(1.1)
    model(batch)["mutual_llm"].backward()
    grad = model.entity.weight.grad
    assert float(grad[: data.n_users].abs().sum()) == 0, "the user rows are not the LLM's here"
    assert float(grad[data.n_users:].abs().sum()) > 0


def test_sequential_schedule_trains_the_llm_side_then_the_domain_side(built, cfg, data):
    import copy

    from bridgerec.config import ConfigError

    model = copy.deepcopy(built)
    model.schedule, model.llm_epochs = "sequential", 1
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (model.entity.weight, model.domain.user.weight, model.share.feature.weight):
            p.add_(0.05 * float(model.entity.weight.std()) * torch.randn(p.shape, generator=gen))
    batch = _batch(model, data, cfg)
    lora = [p for n, p in model.llm.named_parameters() if p.requires_grad]
    domain = list(model.domain.parameters())

    def grad_norms(epoch):
        model.begin_epoch(epoch)
        model.zero_grad(set_to_none=True)
        sum(model(batch).values()).backward()
        norm = lambda ps: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None)  # noqa: E731
        return norm(lora), norm([model.entity.weight]), norm(domain), norm([model.share.feature.weight])

    g_lora, g_rows, g_domain, g_feature = grad_norms(0)
    assert model.phase == "llm" and g_lora > 0 and g_rows > 0 and g_domain == 0 and g_feature == 0
    g_lora, g_rows, g_domain, g_feature = grad_norms(1)
    assert model.phase == "domain" and g_lora == 0 and g_rows == 0 and g_domain > 0 and g_feature > 0
    with pytest.raises(ConfigError, match="method.bdlm.llm_epochs"):
        load_config(None, ["method.name=bdlm", "method.bdlm.schedule=sequential", "train.epochs=1"])


def test_title_task_targets_the_events_item_title(ray_session, session_dir, domain_npz, data):
    from bridgerec.methods.bdlm import _tokenizer
    from bridgerec.llm.backbone import resolve_backbone
    from bridgerec.training.driver import build_method_for_dataset

    cfg = _cfg(session_dir, domain_npz, "method.bdlm.llm_task=title", "method.bdlm.title_max_tokens=12")
    model = build_method_for_dataset(cfg, data)
    tok, _ = _tokenizer(resolve_backbone(cfg.llm, cfg.work_dir, data).path, data.n_users, data.n_items)
    batch = _batch(model, data, cfg, n=8)
    assert batch["prompt_ids"].shape == (8, 64 + 12)
    titles = data.items()["title"].astype(str).to_numpy()
    for i, row, t in zip(batch["pos"].tolist(), batch["prompt_ids"], batch["target_len"].tolist()):
        assert 2 <= t <= 12 and int(row[-1]) == tok.eos_token_id
        target = tok.decode(row[len(row) - t:-1]).strip()
        assert f'"{titles[i]}"'.startswith(target), (target, titles[i])
    loss = model(batch)["llm"]
    assert math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
    loss.backward()
    lora = [p for n, p in model.llm.named_parameters() if p.requires_grad]
    assert sum(float(p.grad.abs().sum()) for p in lora) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.domain.parameters())


@pytest.mark.slow
def test_two_workers_run_the_ablations_and_the_title_task(ray_session, session_dir, domain_npz, data):
    """Ids as text, the sequential schedule and the title task together on 2 DDP workers: the
    logged losses show the phases (epoch 1 trains the LLM side only, epoch 2 the domain side)."""
    from bridgerec.training import train

    cfg = _cfg(session_dir, domain_npz, "method.bdlm.entity_ids=text", "method.bdlm.schedule=sequential",
               "method.bdlm.llm_task=title", "method.bdlm.title_max_tokens=12", "method.bdlm.llm_samples=16",
               "train.strategy=ddp", "train.epochs=2", "train.num_workers=2", "run_name=bdlm-ablations")
    res = train(cfg, data)
    first, second = res.history
    assert first["loss_llm"] > 0 and first["loss_mutual_llm"] >= 0
    assert first["loss_rec"] == 0 and first["loss_rec_llm"] == 0 and first["loss_mutual_domain"] == 0
    assert second["loss_llm"] == 0 and second["loss_mutual_llm"] == 0 and second["loss_rec"] > 0
    assert math.isfinite(second["train_loss"])
