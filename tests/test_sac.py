"""Tests of funrl.algorithms.sac: the squashed policy, probes, entropy tuning, the soft targets, batching."""

import dataclasses
import math

import pytest
import torch

from funrl import random as jr
from funrl import tree
from funrl.algorithms import ddpg, replay, sac
from funrl.envs import make
from funrl.envs.probes import Alternating, ContinuousBandit, TwoStep
from helpers import assert_buffer_stores_final_obs_and_termination, assert_driver_matches_vmap_train, assert_match


def _probe_config(**kw):
    base = dict(
        total_timesteps=300,  # measured: the bandit's mean action is within ~0.05 of 0.5 after 300 updates
        learning_starts=32,
        batch_size=32,
        buffer_size=256,
        hidden_sizes=(16, 16),
        q_lr=1e-2,
        policy_lr=1e-2,
        tau=0.2,
        policy_frequency=1,
        gamma=0.5,
    )
    base.update(kw)
    return sac.Config(**base)


# ---------------------------------------------------------------- the squashed Gaussian policy
def test_policy_log_prob_matches_torch_distributions_and_is_finite_at_the_extremes():
    env, params = make("Pendulum-v1")  # action box [-2, 2]
    spec = ddpg.box_spec(env, params)
    init, distribution, sample = sac.squashed_gaussian_policy(spec, (8,))
    p = init(jr.key(0))
    obs = jr.normal(jr.key(1), (64, 3))
    key = jr.key(2)
    a, log_prob = sample(p, key, obs)
    # CleanRL's get_action with torch.distributions, from the same noise
    hidden = torch.relu(obs @ p["linear_0"]["weight"].T + p["linear_0"]["bias"])
    mean, log_std = (hidden @ p["linear_1"]["weight"].T + p["linear_1"]["bias"]).chunk(2, -1)
    log_std = -5 + 0.5 * (2 - (-5)) * (torch.tanh(log_std) + 1)
    u = mean + log_std.exp() * jr.normal(key, (64, 1))
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()),
        [torch.distributions.TanhTransform(), torch.distributions.AffineTransform(0.0, 2.0)],
    )
    assert torch.allclose(a, 2.0 * torch.tanh(u), atol=1e-6)
    assert torch.allclose(log_prob, reference.log_prob(2.0 * torch.tanh(u)).sum(-1), rtol=1e-4, atol=1e-4)
    # log-std stays in CleanRL's [-5, 2] whatever the network says
    scale = distribution(p, obs * 1e4).scale
    assert float(scale.min()) >= math.exp(-5) * (1 - 1e-6) and float(scale.max()) <= math.exp(2) * (1 + 1e-6)
    # saturated actions (|u| ~ 50): tanh rounds to +-1, the log-density stays finite
    p["linear_1"]["bias"] = torch.tensor([50.0, 0.0])
    a, log_prob = sample(p, key, obs)
    assert torch.isfinite(log_prob).all() and torch.isfinite(a).all()
    assert float(a.min()) >= -2.0 and float(a.max()) <= 2.0 and float(a.min()) > 1.9


# ---------------------------------------------------------------- probes
def test_probe_bandit_mean_action_and_entropy_tuning():
    env = ContinuousBandit()
    config = _probe_config()
    state, metrics = sac.make_train(config, env, env.default_params())(jr.key(0))
    a = sac.evaluation_policy(config, env, env.default_params())(state, jr.key(0), torch.zeros(2, 1))
    # a sign error in the policy's gradient drives the action to -1
    assert torch.allclose(a, torch.full((2, 1), 0.5), atol=0.15), a
    # the entropy starts above the target -|A| = -1, so the temperature falls from 1 (measured ~0.2 here);
    # the entropy falls with it (measured ~0.75 -> ~0.1)
    alpha, entropy = metrics["alpha"], metrics["entropy"]
    assert float(alpha[0]) == 1.0 and float(alpha[-1]) < 0.4
    assert bool((alpha[1:] <= alpha[:-1] + 1e-6).all())  # entropy above target: alpha only decreases
    assert float(entropy[-20:].mean()) < float(entropy[32:52].mean()) - 0.2
    assert bool((entropy > -1.0).all())


def test_probe_truncation_bootstraps_from_final_obs_in_both_critics():
    # a tiny fixed temperature: the soft values are the plain ones up to alpha * |log pi| < 1e-2
    env = Alternating(continuous=True)
    config = _probe_config(total_timesteps=250, autotune=False, alpha=1e-3)
    state, metrics = sac.make_train(config, env, env.default_params())(jr.key(1))
    assert torch.allclose(metrics["alpha"], torch.full_like(metrics["alpha"], 1e-3), rtol=1e-6, atol=0)
    spec = ddpg.box_spec(env, env.default_params())
    critic = ddpg.q_network(spec, config.hidden_sizes)
    _, _, sample = sac.squashed_gaussian_policy(spec, config.hidden_sizes)
    g = 0.5
    expected = torch.tensor([[1.0] * 8, [g] * 8]) / (1 - g * g)  # 4/3 and 2/3
    # at the policy's own actions: with alpha ~ 0 the policy narrows, and Q far from its data is extrapolated
    obs = torch.tensor([[0.0], [1.0]]).repeat_interleave(8, 0)
    actions, _ = sample(state.params["actor"], jr.key(9), obs)
    for name in ("q1", "q2"):
        q = critic.apply(state.params["critic"][name], obs, actions).detach().reshape(2, 8)
        # wrong variants: truncation as termination -> Q(0) ~ 1.14; reset obs as next obs -> Q(0) ~ 1.6
        assert torch.allclose(q, expected, atol=0.08), (name, q)


def test_buffer_holds_real_next_obs_and_terminated_flag():
    assert_buffer_stores_final_obs_and_termination(
        sac, _probe_config(train_frequency=3, total_timesteps=6, learning_starts=100)
    )


# ---------------------------------------------------------------- the SAC losses, recomputed by hand
def test_first_gradient_steps_match_cleanrl_formulas():
    """Critic, policy and temperature gradients of the first learning update, against Adam's first moments.

    Mirrors ``sac``'s key schedule: the rollout step splits the state key in 4
    and keeps the first; ``learn_critic`` splits that in 3 (next key, batch,
    next actions); ``learn_actor`` splits the next key in 3 (next key, policy
    sample, temperature sample).
    """
    env, params = make("Pendulum-v1")
    config = sac.Config(
        total_timesteps=8, num_envs=2, learning_starts=8, batch_size=6, buffer_size=16, hidden_sizes=(8, 8),
        gamma=0.9, policy_frequency=1,
    )
    algo = sac.make_algorithm(config, env, params)
    state = algo.init(jr.key(3))
    for _ in range(3):
        state, _ = algo.update(state)
    prev = state
    state, _ = algo.update(state)  # update 3: global_step 8, the first learning step
    for opt in (state.critic_opt_state, state.actor_opt_state, state.alpha_opt_state):
        assert int(opt[0].count) == 1
    spec = ddpg.box_spec(env, params)
    _, _, sample = sac.squashed_gaussian_policy(spec, config.hidden_sizes)
    critic = ddpg.q_network(spec, config.hidden_sizes)
    key_c, k_batch, k_next = jr.split(jr.split(prev.key, 4)[0], 3)
    _, k_actor, k_alpha = jr.split(key_c, 3)
    batch = replay.sample(state.buffer, k_batch, config.batch_size)
    alpha = 1.0  # log_alpha starts at 0

    def min_q(critic_params, obs, action):
        return torch.minimum(critic.apply(critic_params["q1"], obs, action), critic.apply(critic_params["q2"], obs, action))

    a_next, logp_next = sample(prev.params["actor"], k_next, batch["next_obs"])
    y = batch["reward"] + 0.9 * (~batch["terminated"]).float() * (
        min_q(prev.target_params, batch["next_obs"], a_next) - alpha * logp_next
    )

    def critic_loss(c):
        q1 = critic.apply(c["q1"], batch["obs"], batch["action"])
        q2 = critic.apply(c["q2"], batch["obs"], batch["action"])
        return torch.nn.functional.mse_loss(q1, y) + torch.nn.functional.mse_loss(q2, y)

    def actor_loss(p):  # against the critic updated in this step
        a, logp = sample(p, k_actor, batch["obs"])
        return (alpha * logp - min_q(state.params["critic"], batch["obs"], a)).mean()

    _, logp_new = sample(state.params["actor"], k_alpha, batch["obs"])  # fresh actions of the updated policy

    def alpha_loss(log_alpha):
        return (-log_alpha.exp() * (logp_new + (-1.0))).mean()  # target entropy -|A| = -1

    def first_moment_grad(opt_state):
        return tree.map(lambda m: m / 0.1, opt_state[0].mu)  # Adam: mu_1 = (1 - b1) g

    g_critic = torch.func.grad(critic_loss)(prev.params["critic"])
    assert tree.allclose(first_moment_grad(state.critic_opt_state), g_critic, rtol=1e-4, atol=1e-6)
    g_actor = torch.func.grad(actor_loss)(prev.params["actor"])
    assert tree.allclose(first_moment_grad(state.actor_opt_state), g_actor, rtol=1e-4, atol=1e-6)
    g_alpha = torch.func.grad(alpha_loss)(torch.zeros(()))
    assert torch.allclose(first_moment_grad(state.alpha_opt_state), g_alpha, rtol=1e-4, atol=1e-7)
    # without the entropy term the critic's target, and so its gradient, differ
    y_plain = batch["reward"] + 0.9 * (~batch["terminated"]).float() * min_q(prev.target_params, batch["next_obs"], a_next)
    assert not torch.allclose(y, y_plain, atol=1e-3)


def test_learning_policy_delay_and_targets_are_gated():
    env = TwoStep(continuous=True)
    config = _probe_config(
        total_timesteps=10, learning_starts=4, policy_frequency=2, target_network_frequency=3, tau=0.5, batch_size=4
    )
    algo = sac.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(1))
    assert tree.equal(state.target_params, state.params["critic"])
    actor_steps = 0
    for u in range(algo.num_updates):
        prev = state
        state, metrics = algo.update(state)
        learning = u + 1 >= 4
        actor_turn = learning and u % 2 == 0
        target_turn = learning and u % 3 == 0
        actor_steps += 2 * actor_turn  # CleanRL: policy_frequency policy steps on its turn
        assert tree.equal(state.params["critic"], prev.params["critic"]) != learning, u
        assert tree.equal(state.params["actor"], prev.params["actor"]) != actor_turn, u
        assert torch.equal(state.params["log_alpha"], prev.params["log_alpha"]) != actor_turn, u
        assert int(state.critic_opt_state[0].count) == max(0, u - 2)
        assert int(state.actor_opt_state[0].count) == int(state.alpha_opt_state[0].count) == actor_steps
        if target_turn:
            expected = tree.map(lambda p, t: 0.5 * p + 0.5 * t, state.params["critic"], prev.target_params)
            assert tree.allclose(state.target_params, expected, rtol=0, atol=1e-7), u
        else:
            assert tree.equal(state.target_params, prev.target_params), u
        # the metric is the temperature each policy step used, averaged over the update's policy steps
        alpha_before, alpha_after = math.exp(float(prev.params["log_alpha"])), math.exp(float(state.params["log_alpha"]))
        assert min(alpha_before, alpha_after) - 1e-6 <= float(metrics["alpha"]) <= max(alpha_before, alpha_after) + 1e-6
        if not actor_turn:
            assert float(metrics["alpha"]) == pytest.approx(alpha_before, rel=1e-6)
    assert actor_steps == 6  # updates 4, 6, 8, two steps each


def test_fixed_temperature_without_autotune():
    env = TwoStep(continuous=True)
    config = _probe_config(total_timesteps=8, learning_starts=2, batch_size=4, autotune=False, alpha=0.3)
    state, metrics = sac.make_train(config, env, env.default_params())(jr.key(2))
    assert float(state.params["log_alpha"]) == pytest.approx(math.log(0.3))
    assert int(state.alpha_opt_state[0].count) == 0 and int(state.actor_opt_state[0].count) > 0
    assert torch.allclose(metrics["alpha"], torch.full_like(metrics["alpha"], 0.3))


# ---------------------------------------------------------------- batching identities on Pendulum
def _pendulum_config(**kw):
    base = dict(
        total_timesteps=24, num_envs=2, train_frequency=2, buffer_size=32, batch_size=8, learning_starts=8,
        hidden_sizes=(8, 8),
    )
    base.update(kw)
    return sac.Config(**base)


def test_vmap_train_equals_single_runs_and_is_deterministic(pendulum):
    env, params = pendulum
    config = _pendulum_config()
    train = sac.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    names = {"episode_return", "episode_length", "episodes", "critic_loss", "q_value", "actor_loss", "alpha_loss", "alpha", "entropy"}
    assert set(metrics) == names
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    assert_match(train(keys[1]), (s_i, m_i))  # same key, same path: bit for bit


def test_driver_eager_equals_vmap_train(pendulum):
    env, params = pendulum
    keys = jr.split(jr.key(3), 2)
    assert_driver_matches_vmap_train(sac, _pendulum_config(total_timesteps=16), env, params, keys, chunk_size=3)


def test_hyperparameter_batching_equals_separate_runs(pendulum):
    env, params = pendulum
    config = _pendulum_config(total_timesteps=16, learning_starts=4, autotune=False)
    hp = {
        "q_lr": torch.tensor([1e-3, 3e-2]),
        "policy_lr": torch.tensor([3e-4, 1e-2]),
        "alpha": torch.tensor([0.05, 0.5]),
        "tau": torch.tensor([0.005, 0.5]),
    }
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(sac.make_train(config, env, params))(keys, hp)
    for i in range(2):
        separate = sac.make_train(dataclasses.replace(config, **{k: float(v[i]) for k, v in hp.items()}), env, params)
        assert_match(separate(keys[i])[1], tree.index(metrics, i))
    assert torch.allclose(metrics["alpha"][:, 0], hp["alpha"])


# ---------------------------------------------------------------- errors
def test_bad_inputs(pendulum):
    env, params = pendulum
    with pytest.raises(ValueError, match="config.q_lr"):
        sac.Config(q_lr=0.0)
    with pytest.raises(ValueError, match="config.policy_lr"):
        sac.Config(policy_lr=-3e-4)
    with pytest.raises(ValueError, match="config.alpha"):
        sac.Config(alpha=0.0)
    with pytest.raises(ValueError, match="config.target_network_frequency"):
        sac.Config(target_network_frequency=0)
    cartpole, c_params = make("CartPole-v1")
    with pytest.raises(ValueError, match="continuous"):
        sac.make_train(sac.Config(), cartpole, c_params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        sac.make_train(_pendulum_config(), env, params)(jr.key(0), {"learning_rate": 0.1})
