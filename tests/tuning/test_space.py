"""Search space files: the shipped ones load and fit their configs; mistakes name the file and key."""

from __future__ import annotations

import os

import pytest

from bridgerec.config import ConfigError, load_config
from bridgerec.tuning import check_space, load_space

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = {"base": "lightgcn_synthetic", "rlmrec-con": "rlmrec_con_lightgcn_synthetic",
           "rlmrec-gen": "rlmrec_gen_lightgcn_synthetic", "darec": "darec_lightgcn_synthetic",
           "bigrec": "bigrec_tiny_synthetic", "llama4rec": "llama4rec_tiny_synthetic"}
LLM_METHODS = {"bigrec", "llama4rec"}  # a trial reports once: fifo, and fewer (longer) trials


@pytest.mark.parametrize("method", sorted(SHIPPED))
def test_shipped_spaces_fit_their_configs(method):
    spec = load_space(os.path.join(ROOT, "jobs", "spaces", f"{method}.yaml"))
    cfg = load_config(os.path.join(ROOT, "jobs", "configs", f"{SHIPPED[method]}.yaml"))
    check_space(spec, cfg, method)  # raises on a key the config does not have
    if method in LLM_METHODS:
        assert spec.num_samples >= 4 and spec.scheduler == "fifo"
    else:
        assert spec.num_samples >= 16 and spec.scheduler == "asha"
    assert set(spec.tune_space()) == set(spec.params)


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, expected", [
    ("params: {train.lr: {lognormal: [0.1, 1]}}", "params.train.lr: unknown distribution 'lognormal'"),
    ("params: {train.lr: {uniform: [0.1]}}", "params.train.lr.uniform: expected a list of 2 numbers"),
    ("params: {train.lr: {uniform: [1, 0.1]}}", "low < high"),
    ("params: {train.lr: {loguniform: [0, 1]}}", "params.train.lr.loguniform: low must be > 0"),
    ("params: {train.lr: {grid: [0.1, 0.2]}}\nsearch: optuna", "params.train.lr: grid values need search: random"),
    ("params: {train.lr: {uniform: [0.1, 1]}}\nnum_trials: 3", "num_trials: unknown key"),
    ("params: {}", "params: name at least one config key"),
])
def test_space_errors_name_the_file_and_key(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert path in str(err.value) and expected in str(err.value)


def test_a_key_the_config_does_not_have_is_named_before_any_trial(tmp_path):
    spec = load_space(_write(tmp_path, "params: {method.rlmrec.temprature: {uniform: [0.1, 1]}}"))
    with pytest.raises(ConfigError, match=r"(?s)space file x: .*method\.rlmrec\.temprature: unknown key"):
        check_space(spec, load_config(None), "space file x")
    spec = load_space(_write(tmp_path, "params: {train.batch_size: {randint: [-4, 8]}}"))
    with pytest.raises(ConfigError, match="train.batch_size"):  # the low end is checked too
        check_space(spec, load_config(None), "space file x")


def test_grids_multiply_trials_and_overrides_win(tmp_path):
    path = _write(tmp_path, "params: {train.lr: {grid: [0.1, 0.2, 0.3]}, model.dim: {grid: [8, 16]}}\nsearch: random\nnum_samples: 2")
    assert load_space(path).total_trials() == 12
    assert load_space(path, {"num_samples": 1, "scheduler": "fifo", "search": None}).total_trials() == 6
    assert load_space(path, {"scheduler": "fifo"}).scheduler == "fifo"


def test_asha_needs_room_to_stop(tmp_path):
    spec = load_space(_write(tmp_path, "params: {train.lr: {uniform: [0.001, 0.1]}}\ngrace_period: 3"))
    with pytest.raises(ConfigError, match="grace_period 3 >= train.epochs 3"):
        check_space(spec, load_config(None, ["train.epochs=3"]), "s")


def test_concurrency_follows_the_cluster_and_the_trial_size(tmp_path):
    from bridgerec.tuning import max_concurrent

    spec = load_space(_write(tmp_path, "params: {train.lr: {uniform: [0.001, 0.1]}}"))
    two_workers = load_config(None, ["train.num_workers=2"])
    assert max_concurrent(spec, two_workers, {"CPU": 8.0}) == 4
    assert max_concurrent(spec, two_workers, {"CPU": 1.0}) == 1  # at least one
    assert max_concurrent(spec, load_config(None, ["train.num_workers=2", "train.use_gpu=true"]), {"CPU": 64.0, "GPU": 8.0}) == 4
    capped = load_space(_write(tmp_path, "params: {train.lr: {uniform: [0.001, 0.1]}}\nmax_concurrent_trials: 3"))
    assert max_concurrent(capped, two_workers, {"CPU": 64.0}) == 3
    # a Ray started locally advertises max(8, cores) logical CPUs: CPU trials count the cores
    assert max_concurrent(spec, two_workers, {"CPU": 8.0}, cores=2) == 1
    assert max_concurrent(spec, two_workers, {"CPU": 8.0}, cores=16) == 4
    gpu = load_config(None, ["train.num_workers=2", "train.use_gpu=true"])
    assert max_concurrent(spec, gpu, {"CPU": 8.0, "GPU": 4.0}, cores=2) == 2  # GPUs are not capped by cores


def test_asha_rungs_survive_a_resume(tmp_path):
    """Tuner.restore brings the scheduler back as pickled at the start: the rungs come from its file."""
    from ray.tune.schedulers import TrialScheduler

    from bridgerec.tuning.sweep import _scheduler

    spec = load_space(_write(tmp_path, "params: {train.lr: {uniform: [0.001, 0.1]}}\nscheduler: asha\ngrace_period: 1"))
    cfg = load_config(None, ["train.epochs=3"])
    state = str(tmp_path / "sweep" / "asha_rungs.json")

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    def scheduler(stopped):
        s = _scheduler(spec, cfg, lambda trial_id, epoch: stopped.append((trial_id, epoch)), state)
        s.set_search_properties("valid_recall_at_20", "max")
        return s

    stopped = []
    first = scheduler(stopped)
    first.on_trial_add(None, Trial("good"))
    assert first.on_trial_result(None, Trial("good"), {"epoch": 1, "valid_recall_at_20": 0.5}) == TrialScheduler.CONTINUE
    resumed = scheduler(stopped)  # as after --resume: a fresh object, the same file
    resumed.on_trial_add(None, Trial("bad"))
    assert resumed.on_trial_result(None, Trial("bad"), {"epoch": 1, "valid_recall_at_20": 0.1}) == TrialScheduler.STOP
    assert stopped == [("bad", 1)]
    fresh = _scheduler(spec, cfg, lambda *a: None, str(tmp_path / "other.json"))  # without the file: nothing to compare with
    fresh.set_search_properties("valid_recall_at_20", "max")
    fresh.on_trial_add(None, Trial("bad"))
    assert fresh.on_trial_result(None, Trial("bad"), {"epoch": 1, "valid_recall_at_20": 0.1}) == TrialScheduler.CONTINUE


def test_an_asha_sweep_of_an_llm_tuning_method_is_refused_before_any_work(tmp_path):
    from bridgerec.workflows.tune import run_tune

    space = _write(tmp_path, "params: {train.lr: {loguniform: [0.001, 0.01]}}")  # scheduler asha by default
    cfg = load_config(None, ["method.name=bigrec", f"work_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="scheduler: asha with method.name=bigrec: a trial that tunes the LLM reports once"):
        run_tune(cfg, space)


def test_a_sweep_over_a_rating_error_is_refused_before_any_work(tmp_path):
    """Sweeps maximise their metric; a rating model's RMSE would be maximised: refused, naming the key."""
    from bridgerec.workflows.tune import run_tune

    space = _write(tmp_path, "params: {train.lr: {loguniform: [0.001, 0.01]}}")
    cfg = load_config(None, ["model.name=mf", "model.objective=rating", f"work_dir={tmp_path}"])
    assert cfg.train.select_metric == "rmse"
    with pytest.raises(ConfigError, match="train.select_metric=rmse: a sweep maximises"):
        run_tune(cfg, space)
