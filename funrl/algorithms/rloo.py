"""RLOO (Ahmadian et al., 2024; Kool et al., 2019): REINFORCE with a leave-one-out baseline, for language models.

Read top to bottom: Config -> make_algorithm (the advantage) -> make_train.
The shared parts (model, LoRA, sampling, pretraining, the clipped token-level
update, metrics) are in :mod:`funrl.algorithms.lm_common`.

Each RL update samples ``G = group_size`` completions per prompt and puts the
KL to the reference *in the reward*, per sequence, as TRL's RLOOTrainer does:

    R_i = r_i - beta * sum_t k1_t,       k1_t = log pi_old(y_t) - log pi_ref(y_t)
    A_i = R_i - mean_{j != i} R_j        (the other G - 1 completions of the same prompt)

The baseline of completion ``i`` does not depend on ``i``'s own sample, so the
policy gradient stays unbiased (unlike subtracting the group mean including
``i``, which shrinks it by ``(G - 1) / G``).  Every token of completion ``i``
gets ``A_i``; the step minimises the clipped token-level surrogate (with
``update_epochs=1`` the ratio is 1 and this is exactly REINFORCE's gradient).
"""

from __future__ import annotations

import dataclasses

from funrl.algorithms.common import Algorithm, make_train_from, one_seed_lift
from funrl.algorithms.lm_common import COMPILE, check_metrics, PolicyConfig, evaluate, make_env, lm_algorithm, make_parts, make_policy_update
from funrl.lm import group
from funrl.losses.sequence import kl_divergence_estimate, leave_one_out_advantages

__all__ = ["COMPILE", "Config", "HYPERPARAMS", "PARAMS", "TARGETS", "make_algorithm", "make_train", "make_env", "evaluate", "check_metrics"]


@dataclasses.dataclass(frozen=True)
class Config(PolicyConfig):
    """RLOO hyper-parameters (all in :class:`~funrl.algorithms.lm_common.PolicyConfig`).

    ``beta`` weighs the k1 KL *in the reward* (TRL's RLOOTrainer default is
    0.05; 0.02 here, as GRPO's, keeps the two comparable on random-walks).
    """

    def __post_init__(self):
        self._check_policy()


#: Config fields that can differ per seed in one vmapped run.
HYPERPARAMS = ("learning_rate", "beta")
#: where the learned params live (a warm start from an ``sft`` run sets them)
PARAMS = "params"
#: the reference model is a copy of the params a warm start loads
TARGETS = {"ref_params": "params"}


def make_algorithm(config: Config, task, env_params=None, lift=one_seed_lift) -> Algorithm:
    """RLOO's ``init``, ``pretrain`` and ``update`` with every per-seed piece passed through ``lift``."""
    parts = make_parts(config, task, HYPERPARAMS)

    def advantages(state, batch):
        kl = kl_divergence_estimate(batch.old_logp, batch.ref_logp, "k1", batch.mask).sum(-1)  # [N] nats per sequence
        rewards = batch.rewards - state.hparams["beta"] * kl
        return leave_one_out_advantages(group(rewards, config.group_size)).reshape(-1)

    return lm_algorithm(parts, config, make_policy_update(parts, config, advantages, kl_in_loss=False), lift)


def make_train(config: Config, task, env_params=None):
    """``train(key, hparams=None) -> (state, metrics)``: pretraining then RLOO for one seed, pure."""
    return make_train_from(make_algorithm, config, task, env_params)
