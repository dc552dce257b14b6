"""Search spaces of `bridgerec tune`: one YAML file per method under ``jobs/spaces/``.

A space file names the config keys to search (dotted, as in ``key=value`` overrides) with one
distribution each, and the sweep's settings::

    params:
      method.loss_weights.align: {loguniform: [0.01, 1.0]}   # λ
      method.rlmrec.temperature: {uniform: [0.05, 0.5]}        # τ
      model.dim: {choice: [32, 64, 128]}
    search: optuna          # optuna (TPE) or random
    num_samples: 16         # trials
    scheduler: asha         # asha (AsyncHyperBand stops weak trials) or fifo (every trial runs out)
    grace_period: 2         # epochs every trial runs before ASHA may stop it

Distributions: ``uniform``/``loguniform: [low, high]``, ``quniform: [low, high, q]``,
``randint: [low, high]`` (integers, both ends included), ``choice: [v, ...]`` and ``grid: [v, ...]``
(every value, each ``num_samples`` times; random search only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import ValidationError, field_validator, model_validator

from bridgerec._config_base import ConfigError, Section, read_yaml_mapping

__all__ = ["SweepSpec", "load_space", "DISTRIBUTIONS"]

DISTRIBUTIONS = {
    "uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2, "choice": None, "grid": None,
}
"""Distribution name -> number of arguments (None: a non-empty list of values)."""


class SweepSpec(Section):
    params: dict[str, dict[str, list[Any]]]
    """Dotted config key -> ``{distribution: [arguments]}`` (see the module docstring)."""
    search: Literal["optuna", "random"] = "optuna"
    """Search algorithm: optuna (TPE, Optuna's sampler) or random (Tune's variant generator; needed for grid)."""
    num_samples: int = 16
    """Number of trials (with grid values: repeats of the whole grid)."""
    scheduler: Literal["asha", "fifo"] = "asha"
    """asha: Tune's AsyncHyperBandScheduler stops trials whose validation metric trails at a rung; fifo: none is stopped."""
    grace_period: int = 1
    """ASHA: epochs every trial runs before it may be stopped."""
    reduction_factor: float = 2.0
    """ASHA: a trial continues past a rung only if it is in the top 1/reduction_factor there."""
    max_concurrent_trials: Optional[int] = None
    """Trials running at once; None = the cluster's CPUs (GPUs with train.use_gpu) // what one trial's workers take
    (a Ray started by bridgerec counts the machine's cores, not its max(8, cores) logical CPUs)."""
    seed: Optional[int] = 0
    """Seed of the search algorithm (None: unseeded)."""

    @field_validator("params")
    @classmethod
    def _distributions(cls, params: dict) -> dict:
        if not params:
            raise ValueError("params: name at least one config key to search")
        for key, dist in params.items():
            if not isinstance(dist, dict) or len(dist) != 1:
                raise ValueError(f"params.{key}: expected one distribution, e.g. {{uniform: [0.0, 1.0]}}; "
                                 f"distributions: {', '.join(DISTRIBUTIONS)}")
            (kind, args), = dist.items()
            if kind not in DISTRIBUTIONS:
                raise ValueError(f"params.{key}: unknown distribution {kind!r}; distributions: {', '.join(DISTRIBUTIONS)}")
            want = DISTRIBUTIONS[kind]
            if not isinstance(args, list) or (want is None and not args) or (want is not None and len(args) != want):
                raise ValueError(f"params.{key}.{kind}: expected " + ("a non-empty list of values" if want is None
                                 else f"a list of {want} numbers") + f", got {args!r}")
            if want is not None:
                if not all(isinstance(a, (int, float)) for a in args) or args[0] >= args[1]:
                    raise ValueError(f"params.{key}.{kind}: expected numbers [low, high{', q' if want == 3 else ''}] "
                                     f"with low < high, got {args!r}")
                if kind == "loguniform" and args[0] <= 0:
                    raise ValueError(f"params.{key}.loguniform: low must be > 0, got {args[0]}")
        return params

    @model_validator(mode="after")
    def _settings(self) -> "SweepSpec":
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if self.grace_period < 1:
            raise ValueError("grace_period must be >= 1 (epochs)")
        if self.reduction_factor <= 1:
            raise ValueError("reduction_factor must be > 1")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError("max_concurrent_trials must be >= 1 (or null: from the cluster)")
        grids = [k for k, d in self.params.items() if "grid" in d]
        if grids and self.search != "random":
            raise ValueError(f"params.{grids[0]}: grid values need search: random (Optuna samples, it does not enumerate)")
        return self

    # -- what the sweep uses ------------------------------------------------------------------
    def tune_space(self) -> dict[str, Any]:
        """The Tune search space: one flat key per config key."""
        from ray import tune

        out: dict[str, Any] = {}
        for key, dist in self.params.items():
            (kind, args), = dist.items()
            out[key] = {
                "uniform": lambda a: tune.uniform(*a),
                "loguniform": lambda a: tune.loguniform(*a),
                "quniform": lambda a: tune.quniform(*a),
                "randint": lambda a: tune.randint(int(a[0]), int(a[1]) + 1),
                "choice": lambda a: tune.choice(a),
                "grid": lambda a: tune.grid_search(a),
            }[kind](args)
        return out

    def total_trials(self) -> int:
        """``num_samples`` times the size of every grid."""
        n = self.num_samples
        for dist in self.params.values():
            n *= len(dist.get("grid", [None]))
        return n

    def examples(self) -> list[dict[str, Any]]:
        """Two points of the space (every low end / first value, every high end / last value), for
        checking the keys against the config before any trial starts."""
        lows, highs = {}, {}
        for key, dist in self.params.items():
            (kind, args), = dist.items()
            lo, hi = (args[0], args[-1]) if DISTRIBUTIONS[kind] is None else (args[0], args[1])
            lows[key], highs[key] = (int(lo), int(hi)) if kind == "randint" else (lo, hi)
        return [lows, highs]

    def describe(self) -> dict[str, str]:
        """``{key: "loguniform(0.01, 1.0)"}``: the space as MLflow params of the sweep's parent run."""
        return {key: f"{kind}({', '.join(map(str, args))})" for key, d in self.params.items() for kind, args in d.items()}


def load_space(path: str | Path, overrides: Optional[dict[str, Any]] = None) -> SweepSpec:
    """Read and validate a space file; errors name the file and the key."""
    p = Path(path)
    tree = read_yaml_mapping(p, "space file")
    tree.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return SweepSpec.model_validate(tree)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = ".".join(str(x) for x in e["loc"])
            if e["type"] == "value_error":
                lines.append(str(e["ctx"]["error"]))
            elif e["type"] == "extra_forbidden":
                lines.append(f"{loc}: unknown key; allowed keys: {', '.join(SweepSpec.model_fields)}")
            else:
                lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"space file {p}: " + "; ".join(lines)) from None
