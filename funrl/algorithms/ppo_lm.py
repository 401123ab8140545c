"""Token-level PPO for language models (Ziegler et al., 2019; Ouyang et al., 2022), as TRL's PPOTrainer.

Read top to bottom: Config -> value head -> make_algorithm (rewards, GAE, the
loss) -> make_train.  The shared parts (model, LoRA, sampling, pretraining,
metrics) are in :mod:`funrl.algorithms.lm_common`.

Every completion token is an action.  The KL to the reference goes *in the
reward* (PPO-RLHF), per token, with the task's score added at the last real
token (:func:`funrl.losses.kl_penalized_rewards`, k1 estimator):

    r_t = -beta * (log pi_old(y_t) - log pi_ref(y_t))  [+ score at the last token]

A value head (one linear layer on the transformer's final features, sharing
its trunk, like TRL's ``AutoModelForCausalLMWithValueHead``) gives ``V_t``;
advantages are GAE over the completion (``gamma``, ``gae_lambda``; the value
after the last real token is 0), whitened over the batch's real tokens, and
``update_epochs`` Adam steps minimise

    loss = aggregate_t[ -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps_high) A_t) ]
           + vf_coef * 0.5 * mean_t[ max((V_t - G_t)^2, (clip(V_t, V_old -+ cv) - G_t)^2) ]

with funrl's existing :func:`funrl.losses.truncated_generalized_advantage_estimation`
for the advantages.  With LoRA the adapters and the value head train, the
base stays the reference.
"""

from __future__ import annotations

import dataclasses

import torch

from funrl import random as jr
from funrl.algorithms.common import Algorithm, make_train_from, one_seed_lift
from funrl.algorithms.lm_common import (
    COMPILE,
    check_metrics,
    PolicyConfig,
    check_nonnegative,
    evaluate,
    make_env,
    lm_algorithm,
    make_parts,
    policy_logits,
    token_stats,
)
from funrl.algorithms.common import check_config
from funrl.lm.sampling import completion_logits
from funrl.losses.multistep import truncated_generalized_advantage_estimation
from funrl.losses.sequence import (
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    token_clip_fraction,
    token_clipped_surrogate_loss,
)

__all__ = ["COMPILE", "Config", "HYPERPARAMS", "PARAMS", "TARGETS", "make_algorithm", "make_train", "make_env", "evaluate", "check_metrics"]


@dataclasses.dataclass(frozen=True)
class Config(PolicyConfig):
    """Token-level PPO hyper-parameters; TRL's PPOTrainer defaults where they fit a tiny model.

    ``beta`` weighs the k1 KL *in the per-token reward* (TRL: ``kl_coef`` 0.05).
    """

    beta: float = 0.05  #: KL-in-the-reward coefficient (batchable)
    update_epochs: int = 4  #: Adam steps per batch (TRL: 4)
    gamma: float = 1.0  #: discount over completion tokens
    gae_lambda: float = 0.95  #: GAE lambda
    vf_coef: float = 0.1  #: value-loss weight (TRL: 0.1)
    cliprange_value: float = 0.2  #: value clipping around the old values
    whiten_advantages: bool = True  #: standardise advantages over the batch's real tokens

    def __post_init__(self):
        self._check_policy()
        check_config(self, unit=("gamma", "gae_lambda"))
        check_nonnegative(self, "vf_coef", "cliprange_value")
        if not isinstance(self.whiten_advantages, bool):
            raise ValueError(f"config.whiten_advantages: expected a bool, got {self.whiten_advantages!r}")


#: Config fields that can differ per seed in one vmapped run.
HYPERPARAMS = ("learning_rate", "beta")
PARAMS = "params"
TARGETS = {"ref_params": "params"}


def _value_head(config: Config):
    def init(key, params):
        # small weights: initial values near 0, the scale of a reward in [0, 1]
        return {"weight": jr.normal(key, (1, config.d_model)) * 0.01,
                "bias": params["embed_tokens"]["weight"].new_zeros((1,))}

    return init


def make_algorithm(config: Config, task, env_params=None, lift=one_seed_lift) -> Algorithm:
    """Token-level PPO's ``init``, ``pretrain`` and ``update`` with every per-seed piece passed through ``lift``."""
    parts = make_parts(config, task, HYPERPARAMS, extra_rl_params=_value_head(config))
    features = lambda p, tokens, mask: parts.policy_model.apply(p, tokens, mask, hidden=True)  # noqa: E731
    gae = torch.func.vmap(truncated_generalized_advantage_estimation, in_dims=(0, 0, None, 0))

    def values(policy, value_head, batch):
        """V before each completion token ``[N, L]`` (0 where masked)."""
        feats = completion_logits(features, policy, batch.prompts, batch.prompt_mask, batch.tokens, batch.mask)
        # a product and a sum over D rather than a [D] -> [1] matmul: batched matmuls with one output column
        # take size-dependent kernels, and seed i of a batch must equal seed i alone bit for bit
        v = (feats * value_head["weight"][0]).sum(-1) + value_head["bias"][0]
        return torch.where(batch.mask, v, torch.zeros_like(v))

    def targets(state, batch):
        """Advantages and returns ``[N, L]`` from the per-token KL-penalised rewards and the old values."""
        old_v = values(parts.policy_params(state), state.value_head, batch).detach()
        rewards = kl_penalized_rewards(batch.rewards, batch.old_logp, batch.ref_logp, batch.mask, state.hparams["beta"], "k1")
        # the episode ends after the last real token: no discount across it, V after it is 0
        next_real = torch.cat([batch.mask[:, 1:], torch.zeros_like(batch.mask[:, :1])], 1)
        discount = config.gamma * next_real.to(rewards.dtype)
        adv = gae(rewards, discount, config.gae_lambda, torch.cat([old_v, torch.zeros_like(old_v[:, :1])], 1))
        returns = adv + old_v
        if config.whiten_advantages:
            adv = masked_whiten(adv, batch.mask)
        return adv.detach(), returns.detach(), old_v

    def loss_fn(trained, state, batch, adv, returns, old_v):
        policy = parts.policy_from(state, trained)
        logits, logp = policy_logits(parts, policy, batch, config.temperature)
        pg = token_clipped_surrogate_loss(logp, batch.old_logp, adv, batch.mask, config.epsilon,
                                          config.epsilon_high, config.aggregation, batch.mask.shape[-1])
        v = values(policy, trained["value_head"], batch)
        v_clipped = old_v + torch.clamp(v - old_v, -config.cliprange_value, config.cliprange_value)
        vf = 0.5 * masked_mean(torch.maximum((v - returns) ** 2, (v_clipped - returns) ** 2), batch.mask)
        aux = {"clip_frac": token_clip_fraction(logp, batch.old_logp, adv, batch.mask, config.epsilon,
                                                config.epsilon_high).detach(),
               **token_stats(logits, logp, batch.ref_logp, batch.mask)}
        return pg + config.vf_coef * vf, aux

    def update(state):
        state, batch = parts.generate(state)
        adv, returns, old_v = targets(state, batch)
        aux = {}
        for epoch in range(config.update_epochs):
            state, step_aux = parts.rl_step(state, lambda p, s=state: loss_fn(p, s, batch, adv, returns, old_v))
            aux = step_aux if epoch == 0 else aux
        state = state._replace(update_step=state.update_step + 1)
        return state, parts.metrics(batch, phase=torch.ones_like(batch.rewards[0]), **aux)

    return lm_algorithm(parts, config, update, lift)


def make_train(config: Config, task, env_params=None):
    """``train(key, hparams=None) -> (state, metrics)``: pretraining then token-level PPO for one seed, pure."""
    return make_train_from(make_algorithm, config, task, env_params)
