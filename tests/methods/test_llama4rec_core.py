"""Llama4Rec's adaptive aggregation: the per-user weight, the parse of a ranking answer and the blend."""

from __future__ import annotations

import numpy as np
import pytest

from bridgerec.methods.llama4rec_core import (GRID, AlphaRule, aggregate_ranking, aggregate_rating,
                                              long_tail_coefficient, parse_ranking)


@pytest.mark.parametrize("alpha1", GRID)
@pytest.mark.parametrize("alpha2", GRID)
def test_alpha_is_within_unit_interval_and_grows_toward_the_tail(alpha1, alpha2):
    counts = np.random.default_rng(0).zipf(1.6, 500).clip(1, 10_000)
    rule = AlphaRule.from_counts(counts, alpha1, alpha2)
    grid = np.arange(0, 20_000)  # beyond the training range too
    alpha = rule.alpha(grid)
    assert (alpha >= 0).all() and (alpha <= 1).all() and (alpha <= alpha1 + 1e-12).all()
    ell = long_tail_coefficient(grid)
    assert (np.diff(ell) > 0).all()
    assert (np.diff(alpha) <= 1e-12).all(), "alpha must not grow with the long-tail coefficient"
    # the sparsest training user gets the full weight alpha1, the densest the floor alpha1 * alpha2
    assert rule.alpha(counts.min())[0] == pytest.approx(alpha1)
    assert rule.alpha(counts.max())[0] == pytest.approx(alpha1 * alpha2)


def test_alpha_rule_rejects_out_of_range_weights():
    with pytest.raises(ValueError, match="alpha1"):
        AlphaRule(1.5, 0.1, 0.0, 1.0)
    with pytest.raises(ValueError, match="alpha2"):
        AlphaRule(0.5, 1.0, 0.0, 1.0)


@pytest.mark.parametrize("text,expected", [
    ("3, 1, 2", [2, 0, 1]),
    (" [2] then [5], 2 again, 9 is not a candidate\nlater lines: 4", [1, 4]),
    ("Ranking: 4 > 3", [3, 2]),
    ("none of these", None),
    ("", None),
    ("0, 6", None),
])
def test_ranking_answers_parse_to_candidate_positions(text, expected):
    assert parse_ranking(text, 5) == expected


def test_aggregation_moves_from_the_domain_order_to_the_llm_order_with_alpha():
    candidates = [10, 11, 12, 13]
    llm = [3, 2, 1, 0]  # the reverse
    assert aggregate_ranking(candidates, llm, 0.0)[0] == candidates
    assert aggregate_ranking(candidates, llm, 1.0)[0] == candidates[::-1]
    assert aggregate_ranking(candidates, None, 0.9)[0] == candidates  # unparseable: the domain order
    order, utility = aggregate_ranking(candidates, [1], 0.7)  # a partial answer is completed in domain order
    assert order == [11, 10, 12, 13] and (np.diff(utility) <= 0).all()


def test_rating_blend_stays_on_the_scale():
    r = aggregate_rating(np.array([6.0, 1.0, 3.0]), np.array([5.0, 0.0, 4.0]), np.array([1.0, 0.5, 0.25]))
    np.testing.assert_allclose(r, [5.0, 1.0, 3.75])
