"""Every registered domain model honours the DomainModel contract; the registry is strict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgerec.config import ModelConfig
from bridgerec.models import DomainModel, build_model, model_names, register_model
from bridgerec.models.mf import MF
from bridgerec.models.sasrec import build_sequences, histories_from_frame

N_USERS, N_ITEMS = 7, 11
TRAIN = (np.array([0, 1, 2, 3, 4, 5, 6, 0]), np.array([1, 2, 3, 4, 5, 6, 7, 8]))
*HISTORIES, POSITIONS = histories_from_frame(*TRAIN, ts=np.arange(len(TRAIN[0])), n_users=N_USERS)
DATA = {"train_pairs": TRAIN, "histories": HISTORIES}  # what the trainer hands every model


@pytest.mark.parametrize("name", model_names())
def test_contract_shapes(name):
    model = build_model(ModelConfig(name=name, dim=8), N_USERS, N_ITEMS, **DATA)
    assert isinstance(model, DomainModel)
    u = torch.tensor([0, 3])
    assert model.user_embeddings().shape[0] == N_USERS and model.item_embeddings().shape[0] == N_ITEMS
    assert model.full_scores(u).shape == (2, N_ITEMS)
    s = model.score(u, torch.tensor([1, 4]))
    assert s.shape == (2,)
    torch.testing.assert_close(s, model.full_scores(u)[torch.arange(2), torch.tensor([1, 4])])


@pytest.mark.parametrize("name", model_names())
def test_loss_is_a_finite_scalar_that_backpropagates(name):
    model = build_model(ModelConfig(name=name, dim=8, max_seq_len=3), N_USERS, N_ITEMS, **DATA)
    batch = {
        "uid": torch.tensor(TRAIN[0]),
        "pos": torch.tensor(TRAIN[1]),
        "neg": torch.tensor([[9], [10], [0], [0], [1], [1], [2], [3]]),
        "seq": build_sequences(HISTORIES, TRAIN[0], POSITIONS, max_len=3),  # (B, 3)
    }
    loss = model(batch)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()


def test_mf_loss_decreases_and_prefers_positives():
    torch.manual_seed(0)
    model = MF(ModelConfig(dim=8), N_USERS, N_ITEMS)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = {"uid": torch.tensor(TRAIN[0]), "pos": torch.tensor(TRAIN[1]), "neg": torch.tensor([[9], [10], [0], [0], [1], [1], [2], [3]])}
    first = float(model(batch).detach())
    for _ in range(50):
        opt.zero_grad()
        model(batch).backward()
        opt.step()
    assert float(model(batch).detach()) < first * 0.5
    assert (model.score(batch["uid"], batch["pos"]) > model.score(batch["uid"], batch["neg"][:, 0])).all()


def test_registry_rejects_duplicates_and_unknown():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mf")(MF)
    with pytest.raises(ValueError, match="unknown domain model 'nope'"):
        build_model(ModelConfig(name="nope"), 2, 2)
