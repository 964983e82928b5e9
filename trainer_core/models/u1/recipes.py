"""The U1 report's training levers as pack settings (spec 5.4, 5.6, 5.7; seed 000 table 1).

Each :class:`Recipe` is the loss, timestep and condition-dropout settings of
one ablation run, converted from U1's time (t = 1 is clean) to the pack's
sigma (= 1 - t):

- x0 loss: ``x0_mse``; v loss: ``v_mse`` = x0-MSE / max(sigma, t_eps)**2, t_eps 0.05;
- uniform t in [t_eps, 1): ``Uniform(0, 1 - t_eps)`` in sigma;
- logit-normal t ~ sigmoid(N(-0.8, 0.8**2)) clamped to [t_eps, 1 - t_eps]:
  ``LogitNormal(-0.8, 0.8, "t")`` clamped to sigma in [t_eps, 1 - t_eps];
- condition dropout p_text = p_both = 0.1 (about 20% of samples unconditional).

``baseline`` is train_u1's default.yaml (the report's recommendation);
``official`` is official_alignment.yaml (all three levers).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...dropout import ConditionDropout
from ...losses import LossConfig
from ...registry import Registry
from ...timesteps import LogitNormal, TimestepConfig, Uniform

T_EPS = 0.05
LOGIT_MEAN, LOGIT_STD = -0.8, 0.8


@dataclass(frozen=True)
class Recipe:
    """Loss, timesteps and condition dropout of one U1 ablation configuration."""

    description: str
    loss: LossConfig
    timesteps: TimestepConfig
    dropout: ConditionDropout


def x0_loss() -> LossConfig:
    return LossConfig({"x0_mse": 1.0}, t_eps=T_EPS)


def v_loss() -> LossConfig:
    return LossConfig({"v_mse": 1.0}, t_eps=T_EPS)


def uniform_t() -> TimestepConfig:
    """t = t_eps + (1 - t_eps) u: sigma = 1 - t in (0, 1 - t_eps]."""
    return TimestepConfig(Uniform(0.0, 1.0 - T_EPS))


def logit_normal_t() -> TimestepConfig:
    return TimestepConfig(LogitNormal(LOGIT_MEAN, LOGIT_STD, "t"), clamp_min=T_EPS, clamp_max=1.0 - T_EPS)


def cond_dropout() -> ConditionDropout:
    return ConditionDropout(0.1, 0.1)


RECIPES: Registry[Recipe] = Registry("U1 recipe")
RECIPES.register("baseline")(Recipe("x0 loss, uniform t, no dropout (train_u1 default.yaml)", x0_loss(), uniform_t(), ConditionDropout()))
RECIPES.register("v_loss")(Recipe("(a) v loss, uniform t, no dropout", v_loss(), uniform_t(), ConditionDropout()))
RECIPES.register("logit_normal")(Recipe("(b) x0 loss, logit-normal t, no dropout", x0_loss(), logit_normal_t(), ConditionDropout()))
RECIPES.register("cond_dropout")(Recipe("(c) x0 loss, uniform t, p_text = p_both = 0.1", x0_loss(), uniform_t(), cond_dropout()))
RECIPES.register("official")(Recipe("(d) v loss, logit-normal t, p_text = p_both = 0.1 (official_alignment.yaml)", v_loss(), logit_normal_t(), cond_dropout()))
