"""Tests of funrl.algorithms.td3: probes, the smoothed twin-min target, delays, batching identities."""

import dataclasses

import pytest
import torch

from funrl import random as jr
from funrl import tree
from funrl.algorithms import ddpg, replay, td3
from funrl.envs import make
from funrl.envs.probes import Alternating, ContinuousBandit, TwoStep
from helpers import assert_buffer_stores_final_obs_and_termination, assert_driver_matches_vmap_train, assert_match, q_grid


def _probe_config(**kw):
    base = dict(
        total_timesteps=300,
        learning_starts=32,
        batch_size=32,
        buffer_size=256,
        hidden_sizes=(16, 16),
        learning_rate=1e-2,
        tau=0.2,
        policy_frequency=1,
        exploration_noise=0.3,
        gamma=0.5,
    )
    base.update(kw)
    return td3.Config(**base)


def _networks(env, config):
    spec = ddpg.box_spec(env, env.default_params())
    return ddpg.deterministic_actor(spec, config.hidden_sizes), ddpg.q_network(spec, config.hidden_sizes)


# ---------------------------------------------------------------- probes
def test_probe_bandit_actor_finds_the_best_action():
    env = ContinuousBandit()
    config = _probe_config()
    state, _ = td3.make_train(config, env, env.default_params())(jr.key(0))
    a = td3.evaluation_policy(config, env, env.default_params())(state, jr.key(0), torch.zeros(2, 1))
    # a sign error in the actor's gradient drives the action to -1
    assert torch.allclose(a, torch.full((2, 1), 0.5), atol=0.15), a


def test_probe_truncation_bootstraps_from_final_obs_in_both_critics():
    env = Alternating(continuous=True)
    config = _probe_config(total_timesteps=250)
    state, _ = td3.make_train(config, env, env.default_params())(jr.key(1))
    _, critic = _networks(env, config)
    g = 0.5
    expected = torch.tensor([[1.0] * 5, [g] * 5]) / (1 - g * g)  # 4/3 and 2/3
    for name in ("q1", "q2"):
        q = q_grid(critic.apply, state.params["critic"][name], [0.0, 1.0])
        # wrong variants: truncation as termination -> Q(0) ~ 1.14; reset obs as next obs -> Q(0) ~ 1.6
        assert torch.allclose(q, expected, atol=0.08), (name, q)


def test_buffer_holds_real_next_obs_and_terminated_flag():
    assert_buffer_stores_final_obs_and_termination(
        td3, _probe_config(train_frequency=3, total_timesteps=6, learning_starts=100)
    )


# ---------------------------------------------------------------- the TD3 target
def test_critic_step_uses_the_smoothed_twin_min_target():
    """Recompute the first critic gradient by hand (CleanRL's formulas) and compare with Adam's first moment.

    Mirrors ``td3``'s key schedule: the rollout step splits the state key in 4
    and keeps the first; ``learn`` splits that in 3 for (next key, batch, smoothing noise).
    """
    env, params = make("Pendulum-v1")
    config = td3.Config(
        total_timesteps=8, num_envs=2, learning_starts=8, batch_size=6, buffer_size=16, hidden_sizes=(8, 8),
        gamma=0.9, policy_noise=0.4, noise_clip=0.3,
    )
    algo = td3.make_algorithm(config, env, params)
    state = algo.init(jr.key(3))
    for _ in range(3):
        state, _ = algo.update(state)
    prev = state
    state, _ = algo.update(state)  # update 3: global_step 8, the first critic step
    assert int(state.critic_opt_state[0].count) == 1 and int(prev.critic_opt_state[0].count) == 0
    actor, critic = _networks(env, config)
    _, k_batch, k_smooth = jr.split(jr.split(prev.key, 4)[0], 3)
    batch = replay.sample(state.buffer, k_batch, config.batch_size)
    targets = prev.target_params
    eps = jr.normal(k_smooth, (config.batch_size, 1))

    def critic_grad(reduce, smooth=True):
        noise = torch.clamp(eps * 0.4, -0.3, 0.3) * 2.0 if smooth else 0.0  # action scale 2
        a_next = torch.clamp(actor.apply(targets["actor"], batch["next_obs"]) + noise, -2.0, 2.0)
        q_next = reduce(
            critic.apply(targets["critic"]["q1"], batch["next_obs"], a_next),
            critic.apply(targets["critic"]["q2"], batch["next_obs"], a_next),
        )
        y = batch["reward"] + 0.9 * (~batch["terminated"]).float() * q_next

        def loss(c):
            q1 = critic.apply(c["q1"], batch["obs"], batch["action"])
            q2 = critic.apply(c["q2"], batch["obs"], batch["action"])
            return torch.nn.functional.mse_loss(q1, y) + torch.nn.functional.mse_loss(q2, y)

        return torch.func.grad(loss)(prev.params["critic"])

    g_algo = tree.map(lambda m: m / 0.1, state.critic_opt_state[0].mu)  # Adam: mu_1 = (1 - b1) g
    assert tree.allclose(g_algo, critic_grad(torch.minimum), rtol=1e-4, atol=1e-6)
    # the test can tell the difference: a max target or no smoothing gives another gradient
    assert not tree.allclose(g_algo, critic_grad(torch.maximum), rtol=1e-3, atol=1e-4)
    assert not tree.allclose(g_algo, critic_grad(torch.minimum, smooth=False), rtol=1e-3, atol=1e-4)


def test_learning_actor_delay_and_targets_are_gated():
    env = TwoStep(continuous=True)
    config = _probe_config(total_timesteps=10, learning_starts=4, policy_frequency=3, tau=0.5, batch_size=4)
    algo = td3.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(1))
    assert tree.equal(state.target_params, state.params)
    assert not tree.equal(state.params["critic"]["q1"], state.params["critic"]["q2"])  # independent twins
    actor_steps = 0
    for u in range(algo.num_updates):
        prev = state
        state, _ = algo.update(state)
        learning = u + 1 >= 4
        actor_turn = learning and u % 3 == 0
        actor_steps += actor_turn
        for name in ("q1", "q2"):
            assert tree.equal(state.params["critic"][name], prev.params["critic"][name]) != learning, (u, name)
        assert tree.equal(state.params["actor"], prev.params["actor"]) != actor_turn, u
        assert int(state.critic_opt_state[0].count) == max(0, u - 2)
        assert int(state.actor_opt_state[0].count) == actor_steps
        if actor_turn:
            expected = tree.map(lambda p, t: 0.5 * p + 0.5 * t, state.params, prev.target_params)
            assert tree.allclose(state.target_params, expected, rtol=0, atol=1e-7), u
        else:
            assert tree.equal(state.target_params, prev.target_params), u
    assert actor_steps == 3  # updates 3, 6, 9


# ---------------------------------------------------------------- batching identities on Pendulum
def _pendulum_config(**kw):
    base = dict(
        total_timesteps=24, num_envs=2, train_frequency=2, buffer_size=32, batch_size=8, learning_starts=8,
        hidden_sizes=(8, 8),
    )
    base.update(kw)
    return td3.Config(**base)


def test_vmap_train_equals_single_runs_and_is_deterministic(pendulum):
    env, params = pendulum
    config = _pendulum_config()
    train = td3.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    assert set(metrics) == {"episode_return", "episode_length", "episodes", "critic_loss", "actor_loss", "q_value"}
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    assert_match(train(keys[1]), (s_i, m_i))  # same key, same path: bit for bit


def test_driver_eager_equals_vmap_train(pendulum):
    env, params = pendulum
    keys = jr.split(jr.key(3), 2)
    assert_driver_matches_vmap_train(td3, _pendulum_config(total_timesteps=16), env, params, keys, chunk_size=3)


def test_hyperparameter_batching_equals_separate_runs(pendulum):
    env, params = pendulum
    config = _pendulum_config(total_timesteps=16, learning_starts=4)
    hp = {
        "learning_rate": torch.tensor([1e-3, 3e-2]),
        "policy_noise": torch.tensor([0.2, 1.0]),
        "noise_clip": torch.tensor([0.5, 0.1]),
        "gamma": torch.tensor([0.99, 0.5]),
    }
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(td3.make_train(config, env, params))(keys, hp)
    for i in range(2):
        separate = td3.make_train(dataclasses.replace(config, **{k: float(v[i]) for k, v in hp.items()}), env, params)
        assert_match(separate(keys[i])[1], tree.index(metrics, i))


# ---------------------------------------------------------------- errors
def test_bad_inputs(pendulum):
    env, params = pendulum
    with pytest.raises(ValueError, match="config.policy_noise"):
        td3.Config(policy_noise=-0.2)
    with pytest.raises(ValueError, match="config.noise_clip"):
        td3.Config(noise_clip=-1.0)
    with pytest.raises(ValueError, match="config.gamma"):
        td3.Config(gamma=2.0)
    with pytest.raises(ValueError, match="config.batch_size"):
        td3.Config(batch_size=0)
    cartpole, c_params = make("CartPole-v1")
    with pytest.raises(ValueError, match="continuous"):
        td3.make_train(td3.Config(), cartpole, c_params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        td3.make_train(_pendulum_config(), env, params)(jr.key(0), {"alpha": 0.1})
