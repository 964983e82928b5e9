"""Condition dropout routing (U1 report 2.3, spec 5.7)."""

from __future__ import annotations

import math

import pytest
import torch
from flowlora.trainer_core import dropout as dr
from flowlora.trainer_core.errors import ConfigError


def test_ten_percent_each_gives_twenty_percent_unconditional():
    n = 10_000
    routes = dr.ConditionDropout(0.1, 0.1).routes(n, torch.Generator().manual_seed(0))
    bound = 4 * math.sqrt(0.2 * 0.8 / n)  # four binomial standard deviations
    uncond = float(dr.ConditionDropout.unconditional(routes).double().mean())
    assert abs(uncond - 0.2) < bound
    for route in (dr.DROP_TEXT, dr.DROP_BOTH):
        assert abs(float((routes == route).double().mean()) - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)


def test_routes_follow_the_uniform_draw():
    g = torch.Generator().manual_seed(4)
    routes = dr.ConditionDropout(0.25, 0.5).routes(1000, g)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = torch.where(u < 0.25, dr.DROP_TEXT, torch.where(u < 0.75, dr.DROP_BOTH, dr.COND))
    assert torch.equal(routes, expected)


def test_disabled_keeps_every_caption_but_consumes_the_same_draws():
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    routes = dr.ConditionDropout().routes(100, g1)
    dr.ConditionDropout(0.1, 0.1).routes(100, g2)
    assert (routes == dr.COND).all()
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


@pytest.mark.parametrize(("p_text", "p_both", "field"), [(0.6, 0.5, "p_text + p_both"), (-0.1, 0.0, "p_text"), (0.0, 1.5, "p_both")])
def test_impossible_probabilities(p_text, p_both, field):
    with pytest.raises(ConfigError) as err:
        dr.ConditionDropout(p_text, p_both)
    assert err.value.field == field
