"""RMSE/MAE of rating predictions, by hand."""

from __future__ import annotations

import math

import pytest

from bridgerec.evaluation import rating_metrics


def test_rmse_and_mae_on_hand_computed_numbers():
    # errors 0.5, -1, 2, 0: squared 0.25 + 1 + 4 + 0 = 5.25; absolute 3.5
    m = rating_metrics([3.5, 2.0, 5.0, 4.0], [3.0, 3.0, 3.0, 4.0])
    assert m["rmse"] == pytest.approx(math.sqrt(5.25 / 4))
    assert m["mae"] == pytest.approx(3.5 / 4)
    assert rating_metrics([4.0], [4.0]) == {"rmse": 0.0, "mae": 0.0}


@pytest.mark.parametrize("pred,true", [([1.0, 2.0], [1.0]), ([], []), ([float("nan")], [1.0])])
def test_bad_inputs_raise(pred, true):
    with pytest.raises(ValueError):
        rating_metrics(pred, true)
