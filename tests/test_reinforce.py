"""Tests of funrl.algorithms.reinforce: returns, probe environments, batching identities."""

import pytest
import torch

from funrl import random as jr
from funrl import tree
from funrl.algorithms import reinforce
from funrl.envs.probes import ActionReward, ConstantReward, ContinuousBandit, ObservationReward, TwoStep
from helpers import assert_driver_matches_vmap_train, assert_match


# ---------------------------------------------------------------- probes (funrl.envs.probes)
# One float observation, two actions; each env isolates one part of the update so
# that a sign error, a missing discount or a wrong bootstrap gives visibly wrong
# values or a policy that prefers the wrong action.
# Many envs and short rollouts: eager cost is per call, not per env, so 32 envs x
# 2 steps x 80 updates (5k transitions) take about a second.
def _probe_config(**kw):
    base = dict(
        total_timesteps=32 * 2 * 80,
        num_envs=32,
        num_steps=2,
        learning_rate=2e-2,
        gamma=0.5,
        normalize_returns=False,
        hidden_sizes=(16,),
    )
    base.update(kw)
    return reinforce.Config(**base)


def _train_probe(env, config, seed=0):
    params = env.default_params()
    train = reinforce.make_train(config, env, params)
    state, metrics = train(jr.key(seed))
    pol = reinforce._policy(config, env, params)

    def obs(values):
        return torch.tensor(values, dtype=torch.float32)[:, None]

    return state, metrics, lambda v: pol.value(state.params, obs(v)), lambda v: pol.dist(state.params, obs(v)).probs


def test_probe_constant_reward():
    _, metrics, value, _ = _train_probe(ConstantReward(), _probe_config())
    assert torch.allclose(value([0.0]), torch.ones(1), atol=0.05), value([0.0])
    assert float(metrics["episode_return"][-1]) == 1.0 and float(metrics["episode_length"][-1]) == 1.0
    # every return is exactly the one reward
    assert torch.equal(metrics["return_mean"], torch.ones_like(metrics["return_mean"]))


def test_probe_observation_reward():
    _, _, value, _ = _train_probe(ObservationReward(), _probe_config())
    assert torch.allclose(value([-1.0, 1.0]), torch.tensor([-1.0, 1.0]), atol=0.05), value([-1.0, 1.0])


@pytest.mark.parametrize("baseline", [True, False])
def test_probe_action_reward_policy_learns_the_rewarded_action(baseline):
    config = _probe_config(baseline=baseline, normalize_returns=not baseline, total_timesteps=32 * 2 * 40)
    env = ActionReward()
    state, metrics, _, probs = _train_probe(env, config)
    assert float(probs([0.0])[0, 1]) > 0.9, probs([0.0])
    assert float(metrics["episode_return"][-1]) > 0.6  # mean reward 2 p - 1
    act = reinforce.evaluation_policy(config, env, env.default_params())
    assert act(state, jr.key(0), torch.zeros(3, 1)).tolist() == [1, 1, 1]


def test_probe_two_step_discounting():
    _, _, value, _ = _train_probe(TwoStep(), _probe_config(num_steps=4, total_timesteps=32 * 4 * 60))
    expected = torch.tensor([0.5, 1.0])  # gamma = 0.5; no discount would give V(0) = 1, a sign error < 0
    assert torch.allclose(value([0.0, 1.0]), expected, atol=0.05), value([0.0, 1.0])


# ---------------------------------------------------------------- returns, by hand
@pytest.mark.parametrize("baseline", [True, False])
def test_returns_cut_at_episode_ends_and_bootstrap_the_tail(baseline):
    """TwoStep with one env, rollouts of 3 steps from s = 0: rewards 0, 1, 0; episode ends after step 2.

    Returns: G_0 = gamma * 1, G_1 = 1 (the episode ends: nothing flows into the
    next episode), G_2 = gamma * V(s_3 = 1) with a baseline, 0 without.
    """
    env = TwoStep()
    params = env.default_params()
    config = _probe_config(num_envs=1, num_steps=3, total_timesteps=3, gamma=0.5, baseline=baseline)
    algo = reinforce.make_algorithm(config, env, params)
    state = algo.init(jr.key(0))
    pol = reinforce._policy(config, env, params)
    v_tail = float(pol.value(state.params, torch.ones(1, 1))) if baseline else 0.0
    _, metrics = algo.update(state)
    expected = (0.5 + 1.0 + 0.5 * v_tail) / 3
    assert float(metrics["return_mean"]) == pytest.approx(expected, abs=1e-6)
    assert float(metrics["episodes"]) == 1.0 and float(metrics["episode_return"]) == 1.0


# ---------------------------------------------------------------- batching identities on CartPole
def _cartpole_config(**kw):
    base = dict(total_timesteps=3 * 2 * 6, num_envs=2, num_steps=6, hidden_sizes=(8,), learning_rate=1e-2)
    base.update(kw)
    return reinforce.Config(**base)


@pytest.mark.parametrize("baseline", [False, True])
def test_vmap_train_equals_single_runs_and_is_deterministic(cartpole, baseline):
    env, params = cartpole
    config = _cartpole_config(baseline=baseline)
    train = reinforce.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    names = {"episode_return", "episode_length", "episodes", "pg_loss", "v_loss", "entropy", "return_mean"}
    assert set(metrics) == names
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    s_again, m_again = train(keys[1])
    s_one, m_one = train(keys[1])
    assert_match((s_again, m_again), (s_one, m_one))  # same key twice: bit for bit
    assert states.update_step.tolist() == [3, 3]
    assert float(metrics["episodes"].sum()) > 0  # the identity covered episode ends
    assert not tree.equal(tree.index(states.params, 0), tree.index(states.params, 1))


def test_driver_eager_equals_vmap_train(cartpole):
    env, params = cartpole
    config = _cartpole_config(total_timesteps=4 * 2 * 6)
    keys = jr.split(jr.key(3), 2)
    seen = assert_driver_matches_vmap_train(reinforce, config, env, params, keys, chunk_size=2)
    assert seen == [48, 96]  # 4 updates of 6 steps x 2 envs x 2 seeds, reported every 2 updates


def test_hyperparameter_batching_equals_separate_runs(cartpole):
    env, params = cartpole
    config = _cartpole_config(baseline=False, ent_coef=0.01)
    lrs = torch.tensor([1e-3, 3e-2])
    ent = torch.tensor([0.0, 0.1])
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(reinforce.make_train(config, env, params))(keys, {"learning_rate": lrs, "ent_coef": ent})
    for i in range(2):
        separate = reinforce.make_train(
            reinforce.Config(**{**config.__dict__, "learning_rate": float(lrs[i]), "ent_coef": float(ent[i])}), env, params
        )
        _, m_i = separate(keys[i])
        assert_match(m_i, tree.index(metrics, i))
    assert not torch.allclose(metrics["entropy"][0], metrics["entropy"][1])


# ---------------------------------------------------------------- errors
def test_bad_inputs(cartpole):
    env, params = cartpole
    with pytest.raises(ValueError, match="config.learning_rate"):
        reinforce.Config(learning_rate=-1.0)
    with pytest.raises(ValueError, match="config.gamma"):
        reinforce.Config(gamma=1.5)
    with pytest.raises(ValueError, match="config.num_steps"):
        reinforce.Config(num_steps=0)
    with pytest.raises(ValueError, match="config.baseline"):
        reinforce.Config(baseline=1)
    with pytest.raises(ValueError, match="config.ent_coef"):
        reinforce.Config(ent_coef=-0.1)
    with pytest.raises(ValueError, match="config.max_grad_norm"):
        reinforce.Config(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="config.normalize_returns"):
        reinforce.Config(num_envs=1, num_steps=1)
    reinforce.Config(num_envs=1, num_steps=1, normalize_returns=False)
    train = reinforce.make_train(_cartpole_config(), env, params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train(jr.key(0), {"lr": 0.1})


def test_probe_continuous_actions():
    """A Box action space: the Gaussian policy's mean moves to the rewarded action 0.5 (a sign error: to a bound)."""
    env = ContinuousBandit()  # one step, reward -(a - 0.5)^2
    config = _probe_config(log_std_init=-1.0, baseline=True)
    state, metrics, _, _ = _train_probe(env, config)
    mean = reinforce.evaluation_policy(config, env, env.default_params())(state, jr.key(0), torch.zeros(1, 1))
    assert mean.shape == (1, 1) and abs(float(mean[0, 0]) - 0.5) < 0.1, mean
    assert float(state.params["log_std"][0]) < -1.1  # the policy became more precise
    assert float(metrics["episode_return"][-1]) > -0.1  # from about -(0.25 + 0.14) at the start
