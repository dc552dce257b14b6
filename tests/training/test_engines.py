"""Engines: DDP honours grad_clip, precision and skips the all-reduce between accumulation
boundaries; DeepSpeed configs always carry an optimizer; checkpoints refuse pickled objects."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bridgerec.config import TrainConfig
from bridgerec.training.engines import (
    DDPEngine, UnsafeCheckpointError, check_hashes, deepspeed_config, file_hashes, load_state,
)


class _Toy(nn.Module):
    """forward(batch) -> named losses, like a Method."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Linear(4, 1)

    def forward(self, batch):
        return {"rec": (self.w(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean() * 100}


@pytest.fixture
def gloo_group(tmp_path):
    """A world-1 process group in this process (in-process vLLM of an earlier test may have made one)."""
    if dist.is_initialized():
        assert dist.get_world_size() == 1
        yield
        return
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(16, 4, generator=g), "y": torch.randn(16, generator=g) * 10}


def _ddp_with_counter(model, calls: list):
    ddp = DistributedDataParallel(model)

    def hook(state, bucket):
        calls.append(1)
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, hook)
    return ddp


def test_ddp_all_reduces_once_per_optimizer_step(gloo_group):
    calls: list = []
    engine = DDPEngine(_Toy(), TrainConfig(grad_accum_steps=4, optimizer="sgd", lr=0.01), {}, wrap=lambda m: _ddp_with_counter(m, calls))
    for i in range(8):
        engine.step(_batch(i))
    assert len(calls) == 2, f"{len(calls)} gradient all-reduces for 2 optimizer steps (no_sync not used)"


def test_ddp_accumulation_matches_one_big_batch(gloo_group):
    """4 micro-batches of 16 with accumulation = one step on the mean loss of the 4."""
    acc = DDPEngine(_Toy(), TrainConfig(grad_accum_steps=4, optimizer="sgd", lr=0.01), {}, wrap=DistributedDataParallel)
    for i in range(4):
        acc.step(_batch(i))
    ref = _Toy()
    opt = torch.optim.SGD(ref.parameters(), lr=0.01)
    sum(ref(_batch(i))["rec"] for i in range(4)).div(4).backward()
    opt.step()
    for a, b in zip(acc.module.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_ddp_clips_the_gradient_norm():
    def moved(clip):
        engine = DDPEngine(_Toy(), TrainConfig(optimizer="sgd", lr=1.0, grad_clip=clip), {}, wrap=lambda m: m)
        before = [p.detach().clone() for p in engine.module.parameters()]
        engine.step(_batch(0))
        return float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(engine.module.parameters(), before))))

    assert moved(None) > 1.0  # the toy loss has a large gradient
    assert moved(0.01) == pytest.approx(0.01, rel=1e-4)  # SGD lr 1: the step is the clipped gradient


def test_ddp_autocast_keeps_fp32_weights():
    """bf16 autocast (run here on the CPU; on a GPU the same context with device cuda)."""
    engine = DDPEngine(_Toy(), TrainConfig(optimizer="sgd", lr=0.01), {}, wrap=lambda m: m)
    engine.precision = "bf16"
    seen = []
    engine.module.w.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    losses = engine.step(_batch(0))
    assert seen == [torch.bfloat16] and losses["rec"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in engine.module.parameters())


def test_user_deepspeed_json_without_optimizer_gets_train_optimizer(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    conf = deepspeed_config(TrainConfig(strategy="deepspeed", deepspeed_config=str(path), lr=0.003, optimizer="adamw"), 2)
    assert conf["optimizer"]["type"] == "Adam" and conf["optimizer"]["params"]["lr"] == 0.003
    assert conf["optimizer"]["params"]["adam_w_mode"] is True
    path.write_text(json.dumps({"optimizer": {"type": "SGD", "params": {"lr": 0.5}}}))
    assert deepspeed_config(TrainConfig(strategy="deepspeed", deepspeed_config=str(path)), 1)["optimizer"]["type"] == "SGD"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    ok = tmp_path / "ok.pt"
    torch.save({"model": {"w": torch.ones(2)}, "optim": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, ok)
    assert torch.equal(load_state(str(ok))["model"]["w"], torch.ones(2))
    bad = tmp_path / "bad.pt"
    torch.save({"model": _Evil()}, bad)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_state(str(bad))


def test_deepspeed_files_are_checked_against_recorded_hashes(tmp_path):
    (tmp_path / "ds").mkdir()
    shard = tmp_path / "ds" / "mp_rank_00_model_states.pt"
    shard.write_bytes(b"original")
    (tmp_path / "state.pt").write_bytes(b"weights")
    hashes = file_hashes(str(tmp_path), exclude=("state.pt",))
    check_hashes(str(tmp_path), hashes, "state.pt")  # untouched: fine
    shard.write_bytes(b"tampered")
    with pytest.raises(UnsafeCheckpointError, match="SHA-256 differs"):
        check_hashes(str(tmp_path), hashes, "state.pt")
    (tmp_path / "ds" / "extra.pt").write_bytes(b"x")
    with pytest.raises(UnsafeCheckpointError, match="no hash was recorded"):
        check_hashes(str(tmp_path), {**hashes, "ds/mp_rank_00_model_states.pt": file_hashes(str(tmp_path))["ds/mp_rank_00_model_states.pt"]}, "state.pt")


def _deepspeed_bf16_worker(rank: int, out_dir: str, port: int) -> None:
    """One DeepSpeed bf16 engine per ZeRO stage (world size 1, gloo; DeepSpeed runs bf16 on CPU)."""
    import deepspeed

    from bridgerec.training import engines

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("gloo", rank=0, world_size=1)
    engines.resolve_precision = lambda p: p  # bridgerec itself only enables bf16 where a GPU supports it
    out = {}
    for stage in (2, 3):
        cfg = TrainConfig(strategy="deepspeed", zero_stage=stage, precision="bf16", batch_size=16, lr=1e-3)
        engine = engines.DeepSpeedEngine(_ToyCast(), cfg, 1, _ToyCast, {})
        for i in range(3):
            engine.step(_batch(i))
        d = os.path.join(out_dir, f"ckpt{stage}")
        os.makedirs(d)
        engine.save(d, 0)
        with deepspeed.zero.GatheredParameters([engine.module.w.weight], enabled=stage == 3):
            module_w = engine.module.w.weight.detach().clone()
        saved = load_state(os.path.join(d, "state.pt"))["model"]["w.weight"]
        out[stage] = (module_w.dtype, saved.dtype, float((saved - module_w.float()).abs().max()), saved)
    torch.save(out, os.path.join(out_dir, "res.pt"))
    dist.destroy_process_group()


class _ToyCast(_Toy):
    def forward(self, batch):
        return {"rec": (self.w(batch["x"].to(self.w.weight.dtype)).float().squeeze(-1) - batch["y"]).pow(2).mean()}


def test_deepspeed_bf16_checkpoint_holds_the_fp32_master_weights(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_deepspeed_bf16_worker, args=(str(tmp_path), port), nprocs=1, join=True)
    res = torch.load(tmp_path / "res.pt", weights_only=False)
    for stage, (module_dtype, saved_dtype, diff, saved) in res.items():
        assert module_dtype == torch.bfloat16 and saved_dtype == torch.float32, stage
        assert 0 < diff < 0.01, f"ZeRO-{stage}: state.pt should hold the fp32 master, not the bf16 copy ({diff})"
    torch.testing.assert_close(res[2][3], res[3][3])  # same data, same optimizer: same master weights
