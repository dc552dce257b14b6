"""MF with ``model.objective=rating``: squared loss on explicit ratings, predictions clipped to
the training scale, embeddings whose inner product is the predicted rating."""

from __future__ import annotations

import pytest
import torch

from bridgerec.config import ConfigError, ModelConfig, load_config
from bridgerec.models import build_model
from bridgerec.models.base import STREAM_COLUMNS

STATS = {"mean": 3.0, "min": 1.0, "max": 5.0}
BATCH = {"uid": torch.tensor([0, 1, 2, 0, 3]), "pos": torch.tensor([1, 2, 3, 4, 0]),
         "neg": torch.zeros(5, 1, dtype=torch.long), "rating": torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])}


def _mf(**kw):
    return build_model(ModelConfig(objective="rating", dim=8, **kw), 4, 6, rating_stats=STATS)


def test_squared_loss_decreases_and_fits_the_ratings():
    torch.manual_seed(0)
    model = _mf(l2=1e-4)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = float(model(BATCH).detach())
    for _ in range(100):
        opt.zero_grad()
        model(BATCH).backward()
        opt.step()
    assert float(model(BATCH).detach()) < first * 0.05
    torch.testing.assert_close(model.score(BATCH["uid"], BATCH["pos"]), BATCH["rating"], atol=0.15, rtol=0)


def test_predictions_are_clipped_to_the_training_scale_and_scores_are_the_rating():
    model = _mf()
    with torch.no_grad():
        model.user.weight.fill_(2.0)
        model.item.weight.fill_(1.0)
        model.item_bias.weight[0] = -40.0  # r̂ = 3 + 32 - 40 < 1 for item 0, 3 + 32 > 5 for the rest
    u, i = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    raw = model.score(u, i)
    assert raw[0] < 1 and (raw[1:] > 5).all()
    assert model.predict_ratings(u, i).tolist() == [1.0, 5.0, 5.0]
    # ranking stays on the unclipped prediction; exported embeddings reproduce it exactly
    torch.testing.assert_close(model.full_scores(u)[torch.arange(3), i], raw)
    users, items = model.export_embeddings()
    assert users.shape == (4, 10) and model.dim == 10
    torch.testing.assert_close((users[u] * items[i]).sum(-1), raw.detach())


def test_mu_and_scale_come_back_from_the_state_dict():
    model = _mf()
    rebuilt = build_model(ModelConfig(objective="rating", dim=8), 4, 6)  # no dataset: mu=0, unbounded scale
    rebuilt.load_state_dict(model.state_dict())
    assert float(rebuilt.mu) == 3.0 and (float(rebuilt.r_min), float(rebuilt.r_max)) == (1.0, 5.0)


def test_rating_is_a_stream_column_the_model_asks_for_only_under_the_rating_objective():
    assert "rating" in STREAM_COLUMNS
    model = _mf()
    assert model.stream_columns == ("rating",) and model.predicts_ratings
    assert model.batch_inputs({"uid": BATCH["uid"], "iid": BATCH["pos"], "rating": torch.tensor([4, 2, 1, 3, 5])})["rating"].dtype == torch.float32
    plain = build_model(ModelConfig(dim=8), 4, 6)
    assert plain.stream_columns == () and not plain.predicts_ratings and plain.dim == 8
    assert [n for n, _ in plain.named_parameters()] == ["user.weight", "item.weight"]  # ranking MF unchanged


def test_config_errors_name_the_keys():
    with pytest.raises(ValueError, match="model.objective='rating': model 'lightgcn'"):
        build_model(ModelConfig(name="lightgcn", objective="rating", dim=8), 4, 6,
                    train_pairs=(BATCH["uid"].numpy(), BATCH["pos"].numpy()))
    assert load_config(None, ["model.objective=rating"]).train.select_metric == "rmse"
    assert load_config(None, ["model.objective=rating", "train.select_metric=recall@20"]).train.select_metric == "recall@20"
    with pytest.raises(ConfigError, match="train.select_metric: 'rmse' is a rating metric and needs model.objective=rating"):
        load_config(None, ["train.select_metric=rmse"])
