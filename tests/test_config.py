"""Config loading: overrides, errors that name the key, and every shipped YAML config."""

from __future__ import annotations

import glob
import os

import pytest

from bridgerec.config import Config, ConfigError, apply_overrides, config_docs, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["train.epochs=3", "eval.ks=[5, 20, 50]", "data.preprocess.implicit_threshold=4", "tracking.enabled=false"])
    assert cfg.train.epochs == 3 and cfg.eval.ks == [5, 20, 50]
    assert cfg.data.preprocess.implicit_threshold == 4.0 and cfg.tracking.enabled is False


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.epoch=3"])
    assert "train.epoch" in str(e.value) and "unknown key" in str(e.value) and "epochs" in str(e.value)


def test_literal_error_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.split.protocol=bogus"])
    msg = str(e.value)
    assert "data.split.protocol" in msg and "leave_last_out" in msg and "temporal" in msg


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_config(None, ["train.batch_size=lots"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="data.source.path is required"):
        load_config(None, ["data.source.kind=movielens"])
    with pytest.raises(ConfigError, match="valid_fraction"):
        load_config(None, ["data.split.valid_fraction=0.6", "data.split.test_fraction=0.5"])


def test_select_metric_must_be_evaluated():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["eval.ks=[10, 50]"])  # default train.select_metric is recall@20
    msg = str(e.value)
    assert "train.select_metric" in msg and "eval.ks" in msg and "K=20" in msg
    with pytest.raises(ConfigError, match=r"train\.select_metric: 'auc@20' is not <metric>@<K>; metrics: recall"):
        load_config(None, ["train.select_metric=auc@20"])
    assert load_config(None, ["eval.ks=[5]", "train.select_metric=ndcg@5"]).train.select_metric == "ndcg@5"


def test_validator_errors_read_cleanly():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.n_heads=3"])
    assert str(e.value).splitlines()[1].strip() == "model.n_heads (3) must divide model.dim (64)"


def test_deepspeed_json_is_checked_at_load(tmp_path):
    from bridgerec.training.engines import deepspeed_config

    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=r"train\.deepspeed_config: cannot read .*nope\.json"):
        load_config(None, ["train.strategy=deepspeed", f"train.deepspeed_config={missing}"])
    bad = tmp_path / "bad.json"
    bad.write_text("{stage: 3")
    with pytest.raises(ConfigError, match=r"train\.deepspeed_config: .*bad\.json is not valid JSON"):
        load_config(None, [f"train.deepspeed_config={bad}"])
    clash = tmp_path / "clash.json"
    clash.write_text('{"train_micro_batch_size_per_gpu": 32}')
    with pytest.raises(ConfigError, match=r"train_micro_batch_size_per_gpu=32 but train\.batch_size=64"):
        load_config(None, [f"train.deepspeed_config={clash}", "train.batch_size=64"])
    good = tmp_path / "ds.json"
    good.write_text('{"train_micro_batch_size_per_gpu": "auto", "zero_optimization": {"stage": 3}, '
                    '"optimizer": {"type": "SGD", "params": {"lr": 0.1}}}')
    cfg = load_config(None, [f"train.deepspeed_config={good}", "train.batch_size=64", "train.grad_accum_steps=2"])
    assert cfg.train.zero_stage == 3  # the file's stage is the run's stage (ZeRO-3 checks see it)
    conf = deepspeed_config(cfg.train, world_size=2)
    assert conf["optimizer"]["type"] == "SGD" and conf["zero_optimization"]["stage"] == 3
    assert (conf["train_micro_batch_size_per_gpu"], conf["gradient_accumulation_steps"], conf["train_batch_size"]) == (64, 2, 256)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["no-equals-sign"])
    with pytest.raises(ConfigError, match="sub-key"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_is_documented():
    lines = config_docs()
    undocumented = [l for l in lines if l.rstrip().endswith(":")]
    assert not undocumented, undocumented
    assert any(l.startswith("data.source.synthetic.preset") for l in lines)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "jobs", "configs", "*.yaml"))), ids=os.path.basename)
def test_shipped_configs_load(path):
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("#"), f"{path} must start with the command that runs it"
    assert isinstance(load_config(path, ["data.source.path=/tmp/x"] if "movielens" in path or "amazon" in path else []), Config)
