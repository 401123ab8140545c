"""The on-policy toolkit PPO, A2C and REINFORCE share: policy, rollout, step size, stacking a rollout's steps."""

from __future__ import annotations

import math

import pytest
import torch

from funrl import distributions as dx
from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import on_policy
from funrl.algorithms.common import compiled_lift, identity_lift, one_seed_lift, stack_steps, step_size, vmap_lift
from funrl.envs import make
from funrl.envs.probes import ActionReward
from funrl.envs.wrappers import LogWrapper


# ---------------------------------------------------------------- policy
def test_discrete_policy_is_a_categorical_over_the_actor_logits():
    env, env_params = make("CartPole-v1")
    pol = on_policy.policy(env, env_params, (8,), "tanh")
    params = pol.init(jr.key(0))
    assert set(params) == {"actor", "critic"} and pol.discrete
    obs = jr.normal(jr.key(1), (5, 4))
    d = pol.dist(params, obs)
    assert isinstance(d, dx.Categorical) and d.logits.shape == (5, 2)
    w, b = params["actor"]["linear_1"]["weight"], params["actor"]["linear_1"]["bias"]
    hidden = torch.tanh(obs @ params["actor"]["linear_0"]["weight"].T + params["actor"]["linear_0"]["bias"])
    torch.testing.assert_close(d.logits, hidden @ w.T + b)
    assert pol.value(params, obs).shape == (5,)
    assert torch.equal(pol.mode(params, obs), d.logits.argmax(-1))
    assert "critic" not in on_policy.policy(env, env_params, (8,), "tanh", critic=False).init(jr.key(0))


def test_box_policy_is_a_normal_with_a_state_independent_log_std_and_clipped_env_actions():
    env, env_params = make("Pendulum-v1")  # Box([-2], [2])
    pol = on_policy.policy(env, env_params, (8,), "tanh", log_std_init=-0.5)
    params = pol.init(jr.key(0))
    assert torch.equal(params["log_std"], torch.tensor([-0.5])) and not pol.discrete
    obs = jr.normal(jr.key(1), (6, 3))
    d = pol.dist(params, obs)
    assert isinstance(d, dx.Normal) and d.loc.shape == (6, 1)
    torch.testing.assert_close(d.scale, torch.full((6, 1), math.exp(-0.5)))
    a = torch.tensor([[-3.0], [-1.0], [0.5], [2.0], [2.5], [9.0]])
    assert pol.to_env(a).tolist() == [[-2.0], [-1.0], [0.5], [2.0], [2.0], [2.0]]
    # the log-density of a diagonal Gaussian, by hand
    x = torch.zeros(6, 1)
    by_hand = -0.5 * ((x - d.loc) / math.exp(-0.5)) ** 2 + 0.5 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(d.log_prob(x), by_hand.sum(-1))


def test_policy_rejects_action_spaces_it_cannot_handle():
    env, env_params = make("Pendulum-v1")
    with pytest.raises(ValueError, match=r"env: REINFORCE needs a Discrete action space, got Box"):
        on_policy.policy(env, env_params, (8,), "tanh", algo="REINFORCE", discrete_only=True)


# ---------------------------------------------------------------- rollout
def _rollout(T, lift=one_seed_lift, **kw):
    env, env_params = make("CartPole-v1", max_episode_steps=4)
    env = LogWrapper(env)
    pol = on_policy.policy(env, env_params, (8,), "tanh")
    params = pol.init(jr.key(0))
    obs, env_state = torch.func.vmap(env.reset, in_dims=(0, None))(jr.split(jr.key(1), 3), env_params)
    return pol, params, on_policy.make_rollout(pol, env, env_params, 3, T, lift, **kw), (env_state, obs, jr.key(2))


def test_rollout_records_what_the_policy_did_step_by_step():
    pol, params, rollout, (env_state, obs0, key) = _rollout(6, bootstrap_truncation=True)
    traj, _, obs, _ = rollout(params, env_state, obs0, key)
    assert traj.obs.shape == (6, 3, 4) and traj.action.shape == (6, 3) and traj.reward.shape == (6, 3)
    assert torch.equal(traj.obs[0], obs0)
    # log-probs and values are the acting policy's, recomputed on the recorded observations
    flat = traj.obs.reshape(18, 4)
    torch.testing.assert_close(traj.log_prob.reshape(-1), pol.dist(params, flat).log_prob(traj.action.reshape(-1)))
    torch.testing.assert_close(traj.value.reshape(-1), pol.value(params, flat))
    # the time limit (4 steps) truncates every episode that lasts: final_value is V(final obs) there, 0 elsewhere
    truncated = traj.episode_done & (traj.episode_length == 4)
    assert bool(truncated.any()) and bool((traj.final_value[truncated] != 0).all())
    assert bool((traj.final_value[~truncated] == 0).all())
    assert torch.equal(traj.done, traj.episode_done)


def test_rollout_in_chunks_is_the_same_rollout_bit_for_bit():
    _, params, long, carry = _rollout(6)
    _, _, short, _ = _rollout(2)
    whole, *end = long(params, *carry)
    parts = []
    for _ in range(3):
        part, *carry = short(params, *carry)
        parts.append(part)
    assert tree.equal(whole, tree.concatenate(parts))
    assert tree.equal(end, carry)


def test_rollout_without_values_records_zeros():
    _, params, rollout, carry = _rollout(2, value=False)
    traj, *_ = rollout(params, *carry)
    assert bool((traj.value == 0).all()) and bool((traj.final_value == 0).all())


def test_vmapped_rollout_row_i_is_the_rollout_of_seed_i():
    _, params, one, (env_state, obs, key) = _rollout(3)
    _, _, batched, _ = _rollout(3, lift=vmap_lift)
    stack = lambda *xs: tree.stack(xs)  # noqa: E731
    keys = jr.split(jr.key(7), 2)
    got = batched(stack(params, params), stack(env_state, env_state), stack(obs, obs), keys)
    for i in range(2):
        assert tree.equal(tree.index(got, i), one(params, env_state, obs, keys[i]))


# ---------------------------------------------------------------- step size
def test_step_size_is_the_rate_itself_or_a_linear_anneal_per_update():
    lr = torch.tensor(0.3)
    assert step_size(lr) is lr
    schedule = step_size(lr, anneal_updates=4, steps_per_update=3)
    got = [float(schedule(torch.tensor(c))) for c in range(13)]
    # CleanRL: update u (3 optimiser steps each) uses lr * (1 - u / 4), reaching 0 after the run
    expected = [0.3 * (1 - (c // 3) / 4) for c in range(13)]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # through the optimizer: the update is -lr_t * u at the optimizer's own step count
    tx = optim.scale_by_learning_rate(schedule)
    state = tx.init({"w": torch.zeros(2)})
    for c in range(4):
        u, state = tx.update({"w": torch.ones(2)}, state)
        assert u["w"].tolist() == pytest.approx([-expected[c]] * 2)


def test_step_size_follows_a_per_seed_rate_under_vmap():
    schedule = lambda lr, c: step_size(lr, 2, 1)(c)  # noqa: E731
    got = torch.func.vmap(schedule, in_dims=(0, None))(torch.tensor([0.1, 1.0]), torch.tensor(1))
    assert got.tolist() == pytest.approx([0.05, 0.5])


# ---------------------------------------------------------------- lifts
def test_probe_env_rollout_rewards_the_rewarded_action():
    env, env_params = ActionReward(), ActionReward().default_params()
    env = LogWrapper(env)
    pol = on_policy.policy(env, env_params, (4,), "tanh")
    params = pol.init(jr.key(0))
    obs, env_state = torch.func.vmap(env.reset, in_dims=(0, None))(jr.split(jr.key(1), 8), env_params)
    traj, *_ = on_policy.make_rollout(pol, env, env_params, 8, 2, one_seed_lift)(params, env_state, obs, jr.key(3))
    # ActionReward pays +1 for action 1 and -1 for action 0
    assert torch.equal(traj.reward, torch.where(traj.action == 1, 1.0, -1.0))


def test_every_lift_stacks_steps_at_its_own_step_axis_without_vmap():
    steps = [{"x": torch.arange(6.0).reshape(3, 2) + 10 * t} for t in range(4)]  # 4 steps of [S=3, E=2]
    by_seed = torch.stack([s["x"] for s in steps], 1)  # [S, T, E]
    for lift in (vmap_lift, compiled_lift):
        got = lift(stack_steps)(steps)["x"]
        assert torch.equal(got, by_seed) and got.is_contiguous()
        assert not hasattr(lift(stack_steps), "_torchdynamo_orig_callable")  # a copy: never compiled
    one = [{"x": s["x"][0]} for s in steps]  # one seed's steps: [E]
    for lift in (one_seed_lift, identity_lift):
        assert torch.equal(lift(stack_steps)(one)["x"], by_seed[0])
    assert torch.equal(stack_steps(one)["x"], by_seed[0])  # called directly: a plain stack
    # under an outer vmap (vmap(train)) one_seed_lift's stack is per seed, as the Driver's is
    assert torch.equal(torch.func.vmap(lambda *xs: one_seed_lift(stack_steps)([{"x": x} for x in xs])["x"])(
        *[s["x"] for s in steps]), by_seed)
