"""Run: python jobs/bench/parity.py [--preset small] [--seeds 5] [--models mf,lightgcn] [--epochs N] [--workers 1,2] [--out bench_results/parity.md]

Parity of bridgerec's Ray Train runs with a plain single-process PyTorch reference.

The reference is written here from the papers, independently of ``bridgerec.models``:

- BPR-MF (Rendle et al., 2009): ``s(u, i) = <p_u, q_i>``;
- LightGCN (He et al., 2020): ``Â = D^-1/2 A D^-1/2`` over the user-item graph (repeated pairs
  count once), ``E = 1/(K+1) sum_k Â^k E^(0)``, scores are inner products of the layer means;
- loss ``-mean log sigmoid(s_pos - s_neg) + l2 * (|u^0|² + |i+^0|² + |i-^0|²) / B`` on the
  ego (layer-0) embeddings of the batch, the same scaling as bridgerec's ``model.l2``;
- negatives uniform over the catalogue, rejecting the user's training positives exactly;
- a global random permutation of all training events every epoch, batches of the global batch
  size (the last short batch dropped), Adam;
- the valid split is evaluated every epoch, the best epoch by ``train.select_metric`` is kept,
  ``train.patience`` stops early, and the best epoch's weights are evaluated on test.

Hyperparameters (dim, init_std, l2, n_layers, lr, weight_decay, epochs, patience, negatives) come
from the shipped configs ``<config-dir>/<model>_synthetic.yaml``; data preparation and the
evaluation (``bridgerec.evaluation.evaluate_split``: full ranking, training items masked, and
validation items too on test) are bridgerec's, so the metrics are computed identically.

bridgerec trains the same configs with ``train.num_workers`` = each of ``--workers``, keeping the
global batch equal: ``train.batch_size`` is per worker, so W workers get ``global / W`` each.
Seeds 0..N-1 (``train.seed``; the reference seeds torch and numpy with the same value); one
dataset per model (the config's data block with ``--preset``), one Ray for the whole bench.

Printed and written as markdown to ``--out``: Recall@20 and NDCG@20 mean ± standard error over
seeds, the ratio of the means against the reference, and whether the difference is within two
combined standard errors ``2 * sqrt(se_impl² + se_ref²)``; plus the mean best epoch and wall time.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bridgerec.benchmarking import write_report
from bridgerec.config import Config, load_config
from bridgerec.data.dataset import DatasetDir
from bridgerec.evaluation import EvalResult, evaluate_split
from bridgerec.training import train
from bridgerec.workflows import prepare

MODELS = ("mf", "lightgcn")
METRICS = ("recall@20", "ndcg@20")
MIN_STEPS = 4
"""Small presets: the global batch is lowered so that every setting runs at least this many steps per epoch."""


# ------------------------------------------------------------------------------ the reference


class RefMF(nn.Module):
    """BPR-MF: free user and item vectors; the final embeddings are the ego embeddings."""

    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float):
        super().__init__()
        self.user = nn.Parameter(torch.randn(n_users, dim) * init_std)  # (U, d)
        self.item = nn.Parameter(torch.randn(n_items, dim) * init_std)  # (I, d)

    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user, self.item


class RefLightGCN(RefMF):
    """LightGCN: the same free vectors E^(0) = [P; Q], propagated K times over Â, layer-averaged."""

    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float, n_layers: int, uids: np.ndarray, iids: np.ndarray):
        super().__init__(n_users, n_items, dim, init_std)
        self.n_users, self.n_layers = n_users, n_layers
        edges = np.unique(np.stack([uids, iids], axis=1), axis=0)  # (E, 2) binary R
        u = torch.from_numpy(edges[:, 0])
        i = torch.from_numpy(edges[:, 1]) + n_users  # item nodes after the users
        rows, cols = torch.cat([u, i]), torch.cat([i, u])  # (2E,) A = [[0, R], [R^T, 0]]
        n = n_users + n_items
        deg = torch.zeros(n).index_add_(0, rows, torch.ones(len(rows)))  # (N,)
        inv_sqrt = torch.where(deg > 0, deg.clamp(min=1).rsqrt(), torch.zeros(()))
        self.adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), inv_sqrt[rows] * inv_sqrt[cols], (n, n), check_invariants=True).coalesce()

    def final(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user, self.item])  # (N, d) = E^(0)
        layers = [x]
        for _ in range(self.n_layers):
            x = torch.sparse.mm(self.adj, x)  # (N, d) = E^(k+1) = Â E^(k)
            layers.append(x)
        mean = torch.stack(layers).mean(0)  # (N, d)
        return mean[: self.n_users], mean[self.n_users :]


def bpr_loss(model: RefMF, u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, l2: float) -> torch.Tensor:
    """BPR on the final embeddings + ``l2`` times the batch's squared ego-embedding norms per example.
    ``u``, ``pos`` (B,), ``neg`` (B, N)."""
    users, items = model.final()  # (U, d), (I, d)
    eu = users[u]  # (B, d)
    s_pos = (eu * items[pos]).sum(-1)  # (B,)
    s_neg = (eu.unsqueeze(1) * items[neg]).sum(-1)  # (B, N)
    rank = -F.logsigmoid(s_pos.unsqueeze(1) - s_neg).mean()
    reg = model.user[u].pow(2).sum() + model.item[pos].pow(2).sum() + model.item[neg].pow(2).sum()
    return rank + l2 * reg / len(u)


class UniformNegatives:
    """Uniform item ids that are never one of the user's training positives (exact)."""

    def __init__(self, uids: np.ndarray, iids: np.ndarray, n_items: int, rng: np.random.Generator):
        self.n_items, self.rng = n_items, rng
        self.keys = np.unique(uids * n_items + iids)  # sorted (user, item) keys
        full = np.bincount(self.keys // n_items) >= n_items
        if full.any():
            raise ValueError(f"user {int(np.flatnonzero(full)[0])} has every item as a positive: no negative exists")

    def _positive(self, u: np.ndarray, j: np.ndarray) -> np.ndarray:
        key = u * self.n_items + j
        at = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return self.keys[at] == key

    def sample(self, u: np.ndarray, n: int) -> np.ndarray:
        """(B, n) negatives for users ``u`` (B,)."""
        u = np.broadcast_to(u[:, None], (len(u), n))
        neg = self.rng.integers(0, self.n_items, u.shape)
        for _ in range(50):
            bad = self._positive(u, neg)
            if not bad.any():
                return neg
            neg[bad] = self.rng.integers(0, self.n_items, int(bad.sum()))
        for b, k in zip(*np.nonzero(self._positive(u, neg))):  # near-complete users: draw from the complement
            lo, hi = np.searchsorted(self.keys, [u[b, k] * self.n_items, (u[b, k] + 1) * self.n_items])
            neg[b, k] = self.rng.choice(np.setdiff1d(np.arange(self.n_items), self.keys[lo:hi] % self.n_items))
        return neg


def train_reference(cfg: Config, data: DatasetDir, seed: int, global_batch: int) -> tuple[EvalResult, int]:
    """(test result of the best validation epoch, that epoch 1-based) of the plain reference."""
    if cfg.train.optimizer != "adam" or cfg.train.grad_accum_steps != 1:
        raise ValueError("the reference runs Adam without gradient accumulation; the config asks otherwise")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    uids, iids = data.pairs("train")
    m, t = cfg.model, cfg.train
    if m.name == "mf":
        model = RefMF(data.n_users, data.n_items, m.dim, m.init_std)
    else:
        model = RefLightGCN(data.n_users, data.n_items, m.dim, m.init_std, m.n_layers, uids, iids)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    negatives = UniformNegatives(uids, iids, data.n_items, rng)
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    for epoch in range(t.epochs):
        order = rng.permutation(len(uids))  # global shuffle of every training event
        for s in range(0, len(order) - global_batch + 1, global_batch):
            b = order[s : s + global_batch]
            neg = negatives.sample(uids[b], t.num_negatives)
            loss = bpr_loss(model, torch.from_numpy(uids[b]), torch.from_numpy(iids[b]), torch.from_numpy(neg), m.l2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        value = evaluate(model, data, cfg, "valid").overall[t.select_metric]
        if value > best:
            best, best_epoch, best_state, bad = value, epoch + 1, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if t.patience and bad >= t.patience:
                break
    model.load_state_dict(best_state)
    return evaluate(model, data, cfg, "test"), best_epoch


def evaluate(model: RefMF, data: DatasetDir, cfg: Config, split: str) -> EvalResult:
    with torch.no_grad():
        users, items = model.final()
    return evaluate_split(lambda u: users[u] @ items.T, data, cfg.eval, split)


# ------------------------------------------------------------------------------ the bench


@dataclass
class Run:
    test: EvalResult
    best_epoch: int
    seconds: float


def bench_config(args: argparse.Namespace, model: str, stamp: str, seed: int = 0, workers: int | None = None,
                 global_batch: int | None = None) -> Config:
    """The shipped config with the bench's data, seed and epochs; with ``workers``, that many
    Ray Train workers sharing ``global_batch`` (``train.batch_size`` is per worker)."""
    overrides = [
        f"work_dir={args.work_dir}", f"data.name=synthetic-{args.preset}", f"data.source.synthetic.preset={args.preset}",
        f"train.seed={seed}", "tracking.enabled=false", f"run_name=bench-parity-{model}-{args.preset}-{workers}w-s{seed}-{stamp}",
    ]
    if workers is not None:
        overrides += [f"train.num_workers={workers}", f"train.batch_size={global_batch // workers}"]
    if args.epochs:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(os.path.join(args.config_dir, f"{model}_synthetic.yaml"), overrides)
    if cfg.model.name != model:
        raise ValueError(f"{model}_synthetic.yaml trains model.name={cfg.model.name}, not {model}")
    missing = [k for k in METRICS if int(k.split("@")[1]) not in cfg.eval.ks]
    if missing:
        raise ValueError(f"eval.ks={cfg.eval.ks} of {model}_synthetic.yaml lacks the cut-off of {missing}")
    return cfg


def fit_global_batch(batch: int, n_train: int, workers: list[int]) -> int:
    """The largest global batch <= ``batch``, divisible by every worker count, that gives every
    setting at least MIN_STEPS full steps per epoch (bridgerec drops each rank's remainder)."""
    step = math.lcm(*workers)
    g = max(step, min(batch, n_train // MIN_STEPS) // step * step)
    while g > step and min((n_train // w) // (g // w) for w in workers) < MIN_STEPS:
        g -= step
    return g


def run_bridgerec(cfg: Config, data: DatasetDir) -> Run:
    t0 = time.perf_counter()
    result = train(cfg, data)
    test = evaluate_split(result.model.full_scores, data, cfg.eval, "test")
    return Run(test, int(result.best_metrics.get("epoch", 0)), time.perf_counter() - t0)


def run_reference(cfg: Config, data: DatasetDir, seed: int, global_batch: int) -> Run:
    t0 = time.perf_counter()
    test, epoch = train_reference(cfg, data, seed, global_batch)
    return Run(test, epoch, time.perf_counter() - t0)


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def table(results: dict[str, dict[str, list[Run]]]) -> str:
    """Markdown: one row per (model, implementation); ratios and the 2-SE check against the reference."""
    head = ["model", "implementation", "Recall@20", "NDCG@20", "R@20 / ref", "N@20 / ref",
            "within 2 SE (R, N)", "best epoch", "wall s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for model, impls in results.items():
        ref = {k: mean_se([r.test.overall[k] for r in impls["reference"]]) for k in METRICS}
        for impl, runs in impls.items():
            stats = {k: mean_se([r.test.overall[k] for r in runs]) for k in METRICS}
            cells = [model, impl] + [f"{m:.4f} ± {se:.4f}" for m, se in stats.values()]
            if impl == "reference":
                cells += ["1.000", "1.000", "–"]
            else:
                cells += [f"{stats[k][0] / ref[k][0]:.3f}" for k in METRICS]
                within = []
                for k in METRICS:
                    band = 2 * math.sqrt(stats[k][1] ** 2 + ref[k][1] ** 2)
                    within.append("n/a" if math.isnan(band) else ("yes" if abs(stats[k][0] - ref[k][0]) <= band else "NO"))
                cells.append(" / ".join(within))
            cells.append(f"{np.mean([r.best_epoch for r in runs]):.1f}")
            cells.append(f"{np.mean([r.seconds for r in runs]):.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", help="synthetic size preset (default: small)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per implementation (default: 5)")
    p.add_argument("--models", default="mf,lightgcn", help="comma-separated, from: " + ", ".join(MODELS))
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: the shipped config's)")
    p.add_argument("--workers", default="1,2", help="comma-separated Ray Train worker counts (default: 1,2)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="global batch (default: the shipped config's train.batch_size; lowered on small presets)")
    p.add_argument("--config-dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"),
                   help="directory of <model>_synthetic.yaml (default: jobs/configs beside this script)")
    p.add_argument("--work-dir", default="bridgerec_work", help="work dir (datasets, Ray results)")
    p.add_argument("--out", default="bench_results/parity.md", help="markdown output path")
    args = p.parse_args()
    models = args.models.split(",")
    if unknown := sorted(set(models) - set(MODELS)):
        p.error(f"--models: the reference implements {', '.join(MODELS)}, not {', '.join(unknown)}")
    workers = [int(w) for w in args.workers.split(",")]
    if args.seeds < 1 or min(workers) < 1:
        p.error("--seeds and --workers must be >= 1")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, dict[str, list[Run]]] = {}
    notes = []
    for model in models:
        shipped = bench_config(args, model, stamp)
        data = prepare(shipped, log=lambda m: None)
        n_train = int(data.manifest["counts"]["train"])
        g = fit_global_batch(args.batch_size or shipped.train.batch_size, n_train, workers)
        m, t = shipped.model, shipped.train
        notes.append(f"- `{model}`: {data.manifest['name']} ({data.n_users} users, {data.n_items} items, {n_train} training events), "
                     f"global batch {g} ({', '.join(f'{w} × {g // w}' for w in workers)}), dim {m.dim}, "
                     + (f"{m.n_layers} layers, " if model == "lightgcn" else "")
                     + f"init std {m.init_std}, l2 {m.l2}, lr {t.lr}, {t.num_negatives} negative(s), "
                     f"{t.epochs} epochs, patience {t.patience} on valid {t.select_metric}")
        print(f"[parity] {notes[-1][2:]}", flush=True)
        impls = results.setdefault(model, {})
        for seed in range(args.seeds):
            cfg = bench_config(args, model, stamp, seed, 1, g)
            impls.setdefault("reference", []).append(r := run_reference(cfg, data, seed, g))
            print(f"[parity] {model} reference seed {seed}: {r.test.overall['recall@20']:.4f} R@20, best epoch {r.best_epoch}, {r.seconds:.0f} s", flush=True)
            for w in workers:
                cfg = bench_config(args, model, stamp, seed, w, g)
                impls.setdefault(f"bridgerec {w} worker{'s' * (w > 1)}", []).append(r := run_bridgerec(cfg, data))
                print(f"[parity] {model} bridgerec {w}w seed {seed}: {r.test.overall['recall@20']:.4f} R@20, best epoch {r.best_epoch}, {r.seconds:.0f} s", flush=True)

    text = (f"# Parity: bridgerec vs a plain PyTorch reference, synthetic `{args.preset}`\n\n"
            f"seeds 0..{args.seeds - 1}; test metrics of the best validation epoch (full ranking, training and "
            f"validation items masked); mean ± standard error over seeds; ratio = mean / reference mean; "
            f"within 2 SE = |mean − reference mean| ≤ 2·sqrt(se² + se_ref²); {os.cpu_count()} CPU cores, "
            f"{platform.machine()}, bridgerec `train.strategy` {shipped.train.strategy}.\n\n"
            + "\n".join(notes) + "\n\n" + table(results) + "\n")
    write_report(text, args.out)


if __name__ == "__main__":
    main()
