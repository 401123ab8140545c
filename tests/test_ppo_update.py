"""One PPO update against CleanRL's formulas written out in plain torch (nn.Module, torch.optim.Adam).

The reference recomputes, from the rollout that funrl collected (recorded by a lift around
``one_seed_lift``),
CleanRL's GAE loop, its advantage normalisation, clipped surrogate, clipped
value loss and entropy bonus, and its optimiser step (global-norm clipping,
then Adam over actor and critic together), for two epochs over one full-batch
minibatch: the first epoch has ratio 1 (nothing clipped), the second has
ratios outside the clip range and values that moved, so every clip, max and
coefficient matters.  Non-default coefficients make a wrong one visible.
"""

from __future__ import annotations

import copy

import pytest
import torch

from funrl import random as jr
from funrl.algorithms import ppo
from funrl.algorithms.common import one_seed_lift
from helpers import assert_match
from torch_reference import module

GAMMA, LAMBDA, CLIP, ENT, VF, LR, MAX_NORM = 0.97, 0.8, 0.1, 0.05, 0.7, 0.05, 0.5


def _module(mlp_params) -> torch.nn.Sequential:
    """The funrl MLP ``{"linear_i": {"weight", "bias"}}`` (tanh between layers) as an nn.Sequential."""
    return module(mlp_params, "tanh")


def _cleanrl_gae(rewards, values, dones, last_value):
    """CleanRL's backward loop; ``dones[t]``: transition t ended its episode (CleanRL's ``dones[t + 1]``)."""
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(last_value)
    for t in reversed(range(T)):
        next_values = last_value if t == T - 1 else values[t + 1]
        nextnonterminal = 1.0 - dones[t].float()
        delta = rewards[t] + GAMMA * next_values * nextnonterminal - values[t]
        lastgaelam = delta + GAMMA * LAMBDA * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def _cleanrl_update(params, traj, last_obs, clip_vloss, norm_adv, epochs):
    """CleanRL's ``ppo.py`` update for one rollout, full-batch minibatches; returns (actor, critic, losses)."""
    actor, critic = _module(params["actor"]), _module(params["critic"])
    with torch.no_grad():
        last_value = critic(last_obs).squeeze(-1)
    advantages, returns = _cleanrl_gae(traj.reward, traj.value, traj.done, last_value)
    b_obs = traj.obs.reshape(-1, traj.obs.shape[-1])
    b_actions, b_logprobs = traj.action.reshape(-1), traj.log_prob.reshape(-1)
    b_adv, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), traj.value.reshape(-1)
    optimizer = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()), lr=LR, eps=1e-5)
    losses = []
    for _ in range(epochs):
        logits = actor(b_obs)
        dist = torch.distributions.Categorical(logits=logits)
        newlogprob, entropy = dist.log_prob(b_actions), dist.entropy()
        newvalue = critic(b_obs).squeeze(-1)
        ratio = (newlogprob - b_logprobs).exp()
        mb_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8) if norm_adv else b_adv
        pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - CLIP, 1 + CLIP)).mean()
        if clip_vloss:
            v_unclipped = (newvalue - b_returns) ** 2
            v_clipped = b_values + torch.clamp(newvalue - b_values, -CLIP, CLIP)
            v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((newvalue - b_returns) ** 2).mean()
        loss = pg_loss - ENT * entropy.mean() + v_loss * VF
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(actor.parameters()) + list(critic.parameters()), MAX_NORM)
        optimizer.step()
        losses.append({"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": entropy.mean().detach()})
    return actor, critic, losses, ratio.detach()


@pytest.mark.parametrize("clip_vloss", [True, False])
@pytest.mark.parametrize("norm_adv", [True, False])
def test_one_update_equals_cleanrl_formulas(cartpole, clip_vloss, norm_adv):
    env, env_params = cartpole
    config = ppo.Config(
        total_timesteps=4 * 32 * 10, num_envs=4, num_steps=32, update_epochs=2, num_minibatches=1,
        learning_rate=LR, gamma=GAMMA, gae_lambda=LAMBDA, clip_coef=CLIP, ent_coef=ENT, vf_coef=VF,
        max_grad_norm=MAX_NORM, hidden_sizes=(16, 16), clip_vloss=clip_vloss, norm_adv=norm_adv,
    )
    prepared = []

    def recording_lift(fn):
        """funrl's own lift; records what ``prepare`` got: the rollout [T, E] and the last observation."""
        lifted = one_seed_lift(fn)
        if fn.__name__ != "prepare":
            return lifted

        def run(params, obs, key, hp, traj):
            prepared.append((obs, traj))
            return lifted(params, obs, key, hp, traj)

        return run

    algo = ppo.make_algorithm(config, env, env_params, lift=recording_lift)
    state0 = algo.init(jr.key(11))
    state1, metrics = algo.update(state0)
    (last_obs, traj), = prepared
    assert torch.equal(last_obs, state1.obs)
    assert bool(traj.done.any())  # episode ends inside the rollout: the (1 - done) terms matter

    actor, critic, losses, last_ratio = _cleanrl_update(
        copy.deepcopy(state0.params), traj, last_obs, clip_vloss, norm_adv, config.update_epochs
    )
    # the second epoch clips: some ratios left [1 - clip, 1 + clip]
    assert bool(((last_ratio - 1).abs() > CLIP).any())
    expected = {"actor": {k.replace(".", "_"): v for k, v in actor.state_dict().items()},
                "critic": {k.replace(".", "_"): v for k, v in critic.state_dict().items()}}
    got = {
        part: {f"{i * 2}_{name}": state1.params[part][f"linear_{i}"][name] for i in range(3) for name in ("weight", "bias")}
        for part in ("actor", "critic")
    }
    # the minibatch is a permutation of the batch, so sums run in another order: reassociation only
    assert_match(got, expected, exact=False, ulps=256)
    for name in ("pg_loss", "v_loss", "entropy"):
        mean = torch.stack([l[name] for l in losses]).mean()
        # a mean of terms of size ~1 that cancel to ~1e-4 (pg_loss): the rounding scales with the
        # terms, not the result, hence an absolute floor of 1e-6
        torch.testing.assert_close(metrics[name], mean, rtol=1e-5, atol=1e-6)
