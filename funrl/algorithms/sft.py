"""Supervised fine-tuning (pretraining) of a small transformer on a task's demonstrations.

The first phase of the RL fine-tuning pipeline on its own: next-token
cross-entropy on the completions of :mod:`funrl.lm.tasks` demonstrations
(every real token weighs the same), with the reward of completions sampled
from the current model as ``episode_return``.  Its results folder is a warm
start for the RL algorithms::

    funrl train sft --task random-walks --out runs/sft
    funrl train grpo --task random-walks --init runs/sft --set pretrain_steps=0

which is the same computation as ``funrl train grpo --task random-walks``
(pretraining and RL in one run), split in two.
"""

from __future__ import annotations

import dataclasses

from funrl.algorithms.common import Algorithm, lift_pieces, make_train_from, one_seed_lift
from funrl.algorithms.lm_common import COMPILE, check_metrics, LMConfig, evaluate, make_env, make_parts

__all__ = ["COMPILE", "Config", "HYPERPARAMS", "PARAMS", "TARGETS", "make_algorithm", "make_train", "make_env", "evaluate", "check_metrics"]


@dataclasses.dataclass(frozen=True)
class Config(LMConfig):
    """SFT: ``pretrain_steps`` supervised updates and no RL (``total_timesteps`` is 0)."""

    total_timesteps: int = 0  #: no RL completions (pretraining only)

    def __post_init__(self):
        self._check_lm()
        if self.total_timesteps != 0:
            raise ValueError(f"config.total_timesteps: sft runs no RL (expected 0); set pretrain_steps for its length, "
                             f"got {self.total_timesteps}")


#: Config fields that can differ per seed in one vmapped run.
HYPERPARAMS = ("learning_rate",)
PARAMS = "params"
TARGETS = {"ref_params": "params"}


def make_algorithm(config: Config, task, env_params=None, lift=one_seed_lift) -> Algorithm:
    """SFT's ``init`` and ``update`` (the pretraining step) through ``lift``."""
    parts = make_parts(config, task, HYPERPARAMS)
    (update_l,) = lift_pieces(lift, parts.pretrain)
    return Algorithm(init=parts.init, update=update_l, num_updates=config.num_updates,
                     steps_per_update=config.batch_size)


def make_train(config: Config, task, env_params=None):
    """``train(key, hparams=None) -> (state, metrics)``: ``pretrain_steps`` supervised updates for one seed, pure."""
    return make_train_from(make_algorithm, config, task, env_params)
