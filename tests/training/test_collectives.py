"""Collectives: every torch.distributed call goes through one helper that puts its tensors on the
process group's device (CPU under gloo, the rank's GPU under NCCL)."""

from __future__ import annotations

import ast
import os
import pathlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bridgerec.training import collectives

PACKAGE = pathlib.Path(collectives.__file__).resolve().parents[1]
COLLECTIVES = {"broadcast", "all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "reduce",
               "reduce_scatter", "reduce_scatter_tensor", "scatter", "gather", "gather_object", "barrier",
               "broadcast_object_list", "all_to_all", "send", "recv"}


def _direct_collective_calls(path: pathlib.Path) -> list[str]:
    """``dist.<collective>(...)`` / ``torch.distributed.<collective>(...)`` calls in one source file,
    whatever name ``torch.distributed`` was imported under."""
    tree = ast.parse(path.read_text())
    aliases = {"torch.distributed"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == "torch.distributed" and a.asname}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            aliases |= {a.asname or a.name for a in node.names if a.name == "distributed"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch.distributed":
            hits = [a.name for a in node.names if a.name in COLLECTIVES]
            if hits:
                return [f"{path}:{node.lineno} imports {hits} from torch.distributed"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES:
            owner = ast.unparse(node.func.value)
            if owner in aliases:
                found.append(f"{path.name}:{node.lineno} {owner}.{node.func.attr}")
    return found


def test_no_collective_bypasses_the_helper():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "collectives.py"
                 for hit in _direct_collective_calls(path)]
    assert not offenders, f"call collectives through bridgerec.training.collectives: {offenders}"


def test_the_scan_finds_a_direct_call(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("import torch\nimport torch.distributed as d\n\ndef f(t):\n    d.broadcast(t, src=0)\n"
                   "    torch.distributed.all_reduce(t)\n")
    assert len(_direct_collective_calls(src)) == 2


def test_group_device_under_nccl_is_the_current_gpu(monkeypatch):
    """Without a GPU here, the NCCL branch is checked with the backend query patched (the gloo
    path runs for real below)."""
    monkeypatch.setattr(collectives, "is_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert collectives.group_device() == torch.device("cuda", 3)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "gloo")
    assert collectives.group_device() == torch.device("cpu")


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        flag = collectives.broadcast_flag(rank == 0)  # rank 0 says True
        sums = collectives.all_reduce_sum([rank, 1.0])
        objs = collectives.all_gather_objects({"rank": rank})
        torch.manual_seed(0)
        same = torch.nn.Linear(3, 2)
        torch.manual_seed(rank)
        differ = torch.nn.Linear(3, 2)
        res = (flag, sums, [o["rank"] for o in objs], collectives.same_on_all_ranks(same), collectives.same_on_all_ranks(differ))
        torch.save(res, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_helpers_under_gloo_with_two_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        flag, sums, ranks, same, differ = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        assert flag is True and sums == [1.0, 2.0] and ranks == [0, 1]
        assert same is True and differ is False


def test_single_process_is_a_no_op(monkeypatch):
    # in-process vLLM (the LLM tests of this session) initialises a world-1 group in this process
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert not collectives.is_distributed()
    assert collectives.broadcast_flag(True) is True
    assert collectives.all_gather_objects(5) == [5]
    assert collectives.same_on_all_ranks(torch.nn.Linear(2, 2))
