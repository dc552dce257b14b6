"""Run: python jobs/bench/train_throughput.py --preset small --epochs 3

Training throughput of bridgerec's Ray Train loop against a plain single-process PyTorch loop.

For MF and LightGCN on the same prepared synthetic dataset and the same config (batch size,
negatives, optimizer), in one run:

- plain: one Python process, the same model class and negative sampler, numpy-shuffled batches,
  ``loss.backward(); opt.step()`` — no Ray, no DDP (run in a child process so its peak RSS is its own),
  once per ``--plain-threads`` count (torch's default uses every core; a Ray Train worker with 1 CPU
  runs 1 thread, which is faster for these small kernels);
- Ray Train with 1 and with 2 workers (``train.strategy``, DDP by default) for each
  ``train.shuffle`` mode in ``--shuffles`` (``global``: one seeded Ray Data random_shuffle, then a
  per-epoch permutation of each worker's in-memory share; ``buffer``: streaming from Ray Data every
  epoch through a local shuffle buffer): the samples/s the loop reports per epoch (optimizer steps
  only; validation excluded), averaged over epochs after the first; peak memory = the summed RSS
  of the RayTrainWorker processes, sampled every 0.2 s.

Prints samples/s, the ratio to the plain loop, and peak memory side by side, and the one-time cost
of preparing the train stream (materialise, with and without the global shuffle).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from bridgerec.benchmarking import PeakSampler, ray_workers_rss
from bridgerec.config import Config, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.data.sampling import NegativeSampler
from bridgerec.models import build_model_for_dataset
from bridgerec.training import train
from bridgerec.training.driver import training_stream
from bridgerec.workflows import prepare


def bench_config(args: argparse.Namespace, model: str, workers: int, shuffle: str = "global") -> Config:
    return load_config(None, [f"train.shuffle={shuffle}",
        f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
        f"model.name={model}", f"train.num_workers={workers}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", f"train.strategy={args.strategy}", "train.patience=0",
        "tracking.enabled=false", f"run_name=bench-{model}-{workers}w-{time.time():.0f}",
    ])


def _plain_child(cfg: Config, path: str, queue, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)  # Ray gives each 1-CPU worker OMP_NUM_THREADS=1
    data = DatasetDir(path)
    torch.manual_seed(0)
    model = build_model_for_dataset(cfg.model, data)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    uids, iids = data.pairs("train")
    sampler = NegativeSampler(data.n_items, uids, iids, data.n_users, seed=0)
    rng, bs = np.random.default_rng(0), cfg.train.batch_size
    rates = []
    for _ in range(cfg.train.epochs):
        order, t0, n = rng.permutation(len(uids)), time.time(), 0
        for s in range(0, len(order) - bs + 1, bs):
            b = order[s : s + bs]
            batch = {"uid": torch.from_numpy(uids[b]), "pos": torch.from_numpy(iids[b]),
                     "neg": torch.from_numpy(sampler.sample(uids[b], cfg.train.num_negatives))}
            loss = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(b)
        rates.append(n / (time.time() - t0))
    queue.put((rates, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def run_plain(cfg: Config, path: str, threads: int = 0) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_plain_child, args=(cfg, path, queue, threads))
    proc.start()
    rates, peak = queue.get()
    proc.join()
    return _steady(rates), peak


def _steady(rates: list[float]) -> float:
    """Mean samples/s after the first epoch (warm-up), or the only epoch."""
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def run_ray(cfg: Config, path: str) -> tuple[float, int]:
    with PeakSampler(lambda: ray_workers_rss("RayTrainWorker")) as mem:
        res = train(cfg, DatasetDir(path))
    return _steady([h["samples_per_s"] for h in res.history]), mem.peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="synthetic preset (default small)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per setting (first is warm-up)")
    p.add_argument("--batch-size", type=int, default=2048, help="events per batch per worker")
    p.add_argument("--strategy", default="ddp", choices=["ddp", "deepspeed"], help="Ray Train engine")
    p.add_argument("--models", default="mf,lightgcn", help="comma-separated domain models")
    p.add_argument("--shuffles", default="global,buffer", help="comma-separated train.shuffle modes for the Ray rows")
    p.add_argument("--plain-threads", default="0,1",
                   help="comma-separated torch thread counts for the plain loop (0 = torch's default, all cores); "
                        "the first is the baseline of the ratios. Ray Train workers run with 1 thread per CPU")
    p.add_argument("--work-dir", default="bridgerec_work/bench/train", help="where data and checkpoints go")
    args = p.parse_args(argv)

    path = prepare(bench_config(args, "mf", 1), log=lambda m: None).path
    data = DatasetDir(path)
    stream_s = {}
    for shuffle in ("none", "global"):
        t0 = time.time()
        training_stream(bench_config(args, "mf", 1, shuffle), data)
        stream_s[shuffle] = time.time() - t0
    rows = []
    for model in args.models.split(","):
        plain_rate = None
        for threads in (int(t) for t in args.plain_threads.split(",")):
            rate, mem = run_plain(bench_config(args, model, 1), path, threads)
            plain_rate = plain_rate or rate
            rows.append((model, f"plain, {threads or torch.get_num_threads()} thread(s)", 1, rate, rate / plain_rate, mem))
        for shuffle in args.shuffles.split(","):
            for workers in (1, 2):
                rate, mem = run_ray(bench_config(args, model, workers, shuffle), path)
                rows.append((model, f"Ray {args.strategy} {shuffle}", workers, rate, rate / plain_rate, mem))
    print(f"\ntraining throughput: {data.manifest['name']} ({data.manifest['counts']['train']} training events), "
          f"batch {args.batch_size}, {args.epochs} epochs, {mp.cpu_count()} CPU cores")
    print(f"{'model':<10}{'setting':<22}{'workers':>8}{'samples/s':>12}{'vs plain':>10}{'peak RSS MiB':>14}")
    for model, setting, w, rate, ratio, mem in rows:
        print(f"{model:<10}{setting:<22}{w:>8}{rate:>12,.0f}{ratio:>10.2f}{mem / 2**20:>14,.0f}")
    print(f"train stream, once per run: materialise {stream_s['none']:.1f} s; with the seeded global shuffle "
          f"{stream_s['global']:.1f} s (+{stream_s['global'] - stream_s['none']:.1f} s)")


if __name__ == "__main__":
    main()
