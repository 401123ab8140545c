"""GRPO (Shao et al., 2024, DeepSeekMath): group-relative policy optimisation of a language model.

Read top to bottom: Config -> make_algorithm (the loss, the update) -> make_train.
The shared parts (model, LoRA, sampling, pretraining, metrics) are in
:mod:`funrl.algorithms.lm_common`.

Each RL update samples ``G = group_size`` completions for each of
``num_prompts`` prompts, scores them with the task's reward ``r`` and gives
every token of completion ``i`` the advantage of its group

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)      (normalize="group"; "batch": std over all;
                                                            "none": Dr. GRPO, no std scaling)

then takes ``update_epochs`` Adam steps on

    loss = aggregate_t[ -min(rho_t A_i, clip(rho_t, 1 - epsilon, 1 + epsilon_high) A_i) ]
           + beta * aggregate_t[ k3_t(pi || pi_ref) ]

with ``rho_t = pi(y_t) / pi_old(y_t)`` (exactly 1 on the first step: the old
log-probs come from the same scoring pass as the loss's) and the k3 estimate of
the KL to the reference (KL *in the loss*, GRPO-style; PPO-RLHF puts k1 in the
reward instead, see ``ppo_lm.py``).  ``aggregation`` picks how tokens are
averaged (see :func:`funrl.losses.masked_aggregate` for each one's length bias).

Usage::

    task, _ = funrl.algorithms.lm_common.make_env("random-walks")
    train = grpo.make_train(grpo.Config(), task)
    state, metrics = torch.func.vmap(train)(funrl.random.split(funrl.random.key(0), 8))
"""

from __future__ import annotations

import dataclasses

from funrl.algorithms.common import Algorithm, make_train_from, one_seed_lift
from funrl.algorithms.lm_common import (
    COMPILE,
    check_metrics,
    PolicyConfig,
    check_choices,
    check_nonnegative,
    evaluate,
    make_env,
    lm_algorithm,
    make_parts,
    make_policy_update,
)
from funrl.lm import group
from funrl.losses.sequence import group_relative_advantages

__all__ = ["COMPILE", "Config", "HYPERPARAMS", "PARAMS", "TARGETS", "make_algorithm", "make_train", "make_env", "evaluate", "check_metrics"]

_NORMALIZE = ("group", "batch", "none")


@dataclasses.dataclass(frozen=True)
class Config(PolicyConfig):
    """GRPO hyper-parameters (model, pretraining, LoRA, clipping: :class:`~funrl.algorithms.lm_common.PolicyConfig`).

    Defaults follow TRL's GRPOTrainer where the task allows: one step per
    batch (``update_epochs=1``, so clipping never binds), ``epsilon=0.2``,
    group-normalised advantages with ``eps=1e-4``; ``beta=0.02`` keeps the KL
    to the pretrained model small on random-walks; ``beta`` weighs the k3
    KL term *in the loss*.
    """

    advantage_normalize: str = "group"  #: group | batch | none (Dr. GRPO)
    advantage_eps: float = 1e-4  #: added to the std of the rewards

    def __post_init__(self):
        self._check_policy()
        check_choices(self, advantage_normalize=_NORMALIZE)
        check_nonnegative(self, "advantage_eps")


#: Config fields that can differ per seed in one vmapped run.
HYPERPARAMS = ("learning_rate", "beta")
#: where the learned params live (a warm start from an ``sft`` run sets them)
PARAMS = "params"
#: the reference model is a copy of the params a warm start loads
TARGETS = {"ref_params": "params"}


def make_algorithm(config: Config, task, env_params=None, lift=one_seed_lift) -> Algorithm:
    """GRPO's ``init``, ``pretrain`` and ``update`` with every per-seed piece passed through ``lift``."""
    parts = make_parts(config, task, HYPERPARAMS)

    def advantages(state, batch):
        rewards = group(batch.rewards, config.group_size)  # one row per prompt
        return group_relative_advantages(rewards, config.advantage_normalize, config.advantage_eps).reshape(-1)

    return lm_algorithm(parts, config, make_policy_update(parts, config, advantages, kl_in_loss=True), lift)


def make_train(config: Config, task, env_params=None):
    """``train(key, hparams=None) -> (state, metrics)``: pretraining then GRPO for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; metrics are
    stacked over updates (leaves ``[num_updates]``).
    """
    return make_train_from(make_algorithm, config, task, env_params)
