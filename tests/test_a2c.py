"""Tests of funrl.algorithms.a2c: one update against SB3's formulas in plain torch, probe environments, batching."""

import math

import pytest
import torch
import torch.nn.functional as F

from funrl import nn
from funrl import random as jr
from funrl import tree
from funrl.algorithms import a2c
from funrl.envs import make, spaces
from funrl.envs.probes import ActionReward, Alternating, ContinuousBandit, ObservationReward, TwoStep
from helpers import assert_driver_matches_vmap_train, assert_match


class MultiDiscreteActions(ActionReward):
    """An action space A2C does not support."""

    def action_space(self, params=None):
        return spaces.MultiDiscrete(torch.tensor([2, 2]))


# Many envs and short rollouts: eager cost is per call, not per env.
def _probe_config(**kw):
    base = dict(
        total_timesteps=32 * 2 * 100,
        num_envs=32,
        num_steps=2,
        learning_rate=3e-3,
        gamma=0.5,
        hidden_sizes=(16,),
    )
    base.update(kw)
    return a2c.Config(**base)


def _train_probe(env, config, seed=0):
    params = env.default_params()
    train = a2c.make_train(config, env, params)
    state, metrics = train(jr.key(seed))
    pol = a2c._policy(config, env, params)

    def value(v):
        return pol.value(state.params, torch.tensor(v, dtype=torch.float32)[:, None])

    return state, metrics, value


def test_probe_observation_reward():
    _, _, value = _train_probe(ObservationReward(), _probe_config())
    assert torch.allclose(value([-1.0, 1.0]), torch.tensor([-1.0, 1.0]), atol=0.05), value([-1.0, 1.0])


def test_probe_action_reward_policy_learns_the_rewarded_action():
    config = _probe_config(total_timesteps=32 * 2 * 40)
    env = ActionReward()
    state, metrics, _ = _train_probe(env, config)
    # the actor is a 1-16-2 tanh MLP (its init does not matter for apply)
    actor_probs = torch.softmax(nn.mlp([1, 16, 2], activation="tanh").apply(state.params["actor"], torch.zeros(1, 1)), -1)
    assert float(actor_probs[0, 1]) > 0.9, actor_probs
    assert float(metrics["episode_return"][-1]) > 0.6  # mean reward 2 p - 1
    act = a2c.evaluation_policy(config, env, env.default_params())
    assert act(state, jr.key(0), torch.zeros(3, 1)).tolist() == [1, 1, 1]


@pytest.mark.parametrize("gae_lambda", [1.0, 0.5])
def test_probe_two_step_discounting(gae_lambda):
    config = _probe_config(num_steps=4, total_timesteps=32 * 4 * 60, gae_lambda=gae_lambda)
    _, _, value = _train_probe(TwoStep(), config)
    expected = torch.tensor([0.5, 1.0])  # gamma = 0.5; no discount would give V(0) = 1
    assert torch.allclose(value([0.0, 1.0]), expected, atol=0.05), value([0.0, 1.0])


@pytest.mark.parametrize("bootstrap", [True, False])
def test_probe_truncation_bootstrap(bootstrap):
    config = _probe_config(num_steps=3, total_timesteps=32 * 3 * 80, bootstrap_truncation=bootstrap)
    _, metrics, value = _train_probe(Alternating(), config)
    got = value([0.0, 1.0])
    if bootstrap:
        expected = torch.tensor([4.0 / 3.0, 2.0 / 3.0])
    else:
        # states at t = 0 and t = 2 share s = 0: returns 1.25 and 1, visited equally often
        expected = torch.tensor([1.125, 0.5])
    assert torch.allclose(got, expected, atol=0.06), got
    assert float(metrics["episode_length"][-1]) == 3.0 and float(metrics["episode_return"][-1]) == 2.0


def test_probe_continuous_actions():
    # log_std_init -1 (std 0.37) keeps clipping at the bounds rare, so the optimum mean is 0.5
    config = _probe_config(total_timesteps=32 * 2 * 80, log_std_init=-1.0)
    env = ContinuousBandit()  # one step, reward -(a - 0.5)^2
    state, metrics, _ = _train_probe(env, config)
    act = a2c.evaluation_policy(config, env, env.default_params())
    mean = act(state, jr.key(0), torch.zeros(1, 1))
    assert mean.shape == (1, 1)
    assert abs(float(mean[0, 0]) - 0.5) < 0.1, mean
    assert float(state.params["log_std"][0]) < -1.2  # the policy became more precise
    assert float(metrics["episode_return"][-1]) > -0.1  # from about -(0.25 + 0.14) at the start


# ---------------------------------------------------------------- one update against SB3's formulas
def _reference_forward(params, x):
    h = torch.tanh(F.linear(x, params["linear_0"]["weight"], params["linear_0"]["bias"]))
    return F.linear(h, params["linear_1"]["weight"], params["linear_1"]["bias"])


def test_one_update_equals_sb3_formulas_with_torch_optim_rmsprop():
    """The loss, GAE, gradient clip and RMSprop step of one update, recomputed in plain torch.

    SB3 ``A2C.train``: ``policy_loss = -(A * log_prob).mean()``, ``value_loss =
    F.mse_loss(R, V)``, ``loss = policy_loss - ent_coef * entropy.mean() + vf_coef *
    value_loss``, ``clip_grad_norm_(0.5)``, ``torch.optim.RMSprop(alpha=0.99,
    eps=1e-5)``; returns from SB3's ``compute_returns_and_advantage`` loop.
    """
    env, env_params = make("CartPole-v1")
    config = a2c.Config(num_envs=3, num_steps=5, total_timesteps=15, hidden_sizes=(8,), ent_coef=0.01, gae_lambda=0.9)
    captured = {}

    def spy(fn):
        def piece(*args):
            captured.setdefault(fn.__name__, []).append(args)
            return fn(*args)

        return piece

    algo = a2c.make_algorithm(config, env, env_params, lift=spy)
    state0 = algo.init(jr.key(5))
    state1, metrics = algo.update(state0)
    learn_params, _, last_obs, _, traj = captured["learn"][0]  # traj: [T, E]
    assert tree.equal(learn_params, state0.params) and torch.equal(last_obs, state1.obs)
    T, E = config.num_steps, config.num_envs

    # SB3's GAE loop (gamma 0.99, lambda 0.9); no truncation can happen in 5 CartPole steps
    params = tree.map(lambda x: x.detach().clone().requires_grad_(True), learn_params)
    with torch.no_grad():
        last_values = _reference_forward(params["critic"], last_obs).squeeze(-1)
    values, rewards, dones = traj.value, traj.reward, traj.done.float()
    adv = torch.zeros(T, E)
    last_gae = torch.zeros(E)
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        non_terminal = 1.0 - dones[t]
        delta = rewards[t] + 0.99 * next_values * non_terminal - values[t]
        last_gae = delta + 0.99 * 0.9 * non_terminal * last_gae
        adv[t] = last_gae
    returns = adv + values

    obs = traj.obs.reshape(T * E, -1)
    dist = torch.distributions.Categorical(logits=_reference_forward(params["actor"], obs))
    log_prob = dist.log_prob(traj.action.reshape(-1))
    v_pred = _reference_forward(params["critic"], obs).squeeze(-1)
    policy_loss = -(adv.reshape(-1) * log_prob).mean()
    value_loss = F.mse_loss(returns.reshape(-1), v_pred)
    loss = policy_loss - 0.01 * dist.entropy().mean() + 0.5 * value_loss
    leaves = tree.leaves(params)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(leaves, 0.5)
    opt = torch.optim.RMSprop(leaves, lr=7e-4, alpha=0.99, eps=1e-5)
    opt.step()

    assert torch.allclose(metrics["pg_loss"], policy_loss.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(metrics["v_loss"], value_loss.detach(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(metrics["entropy"], dist.entropy().mean().detach(), rtol=1e-5)
    assert tree.allclose(state1.params, tree.map(lambda x: x.detach(), params), rtol=1e-5, atol=1e-7)
    assert not tree.allclose(state1.params, state0.params, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- batching identities on CartPole
def _cartpole_config(**kw):
    base = dict(total_timesteps=4 * 2 * 3, num_envs=2, num_steps=3, hidden_sizes=(8,), learning_rate=1e-2)
    base.update(kw)
    return a2c.Config(**base)


def test_vmap_train_equals_single_runs_and_is_deterministic(cartpole):
    env, params = cartpole
    config = _cartpole_config()
    train = a2c.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    assert set(metrics) == {"episode_return", "episode_length", "episodes", "pg_loss", "v_loss", "entropy"}
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    s_again, m_again = train(keys[1])
    s_one, m_one = train(keys[1])
    assert_match((s_again, m_again), (s_one, m_one))  # same key twice: bit for bit
    assert states.update_step.tolist() == [4, 4]
    assert not tree.equal(tree.index(states.params, 0), tree.index(states.params, 1))


def test_vmap_train_continuous(cartpole):
    env, params = make("Pendulum-v1")
    config = _cartpole_config(total_timesteps=2 * 2 * 3)
    train = a2c.make_train(config, env, params)
    keys = jr.split(jr.key(1), 2)
    states, metrics = torch.func.vmap(train)(keys)
    assert states.params["log_std"].shape == (2, 1)
    s_0, m_0 = train(keys[0])
    assert_match((s_0, m_0), tree.index((states, metrics), 0))
    assert torch.isfinite(metrics["pg_loss"]).all() and torch.isfinite(metrics["entropy"]).all()
    # Gaussian entropy per dimension 0.5 + 0.5 log(2 pi) + log_std, log_std starting at 0
    assert float(metrics["entropy"][0, 0]) == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi), abs=1e-6)


def test_driver_eager_equals_vmap_train(cartpole):
    env, params = cartpole
    keys = jr.split(jr.key(3), 2)
    seen = assert_driver_matches_vmap_train(a2c, _cartpole_config(), env, params, keys, chunk_size=2)
    assert seen == [24, 48]  # 4 updates of 3 steps x 2 envs x 2 seeds, reported every 2 updates


def test_hyperparameter_batching_equals_separate_runs(cartpole):
    env, params = cartpole
    config = _cartpole_config(ent_coef=0.01)
    lrs = torch.tensor([1e-3, 3e-2])
    lams = torch.tensor([1.0, 0.5])
    keys = jr.split(jr.key(7), 2)
    hp = {"learning_rate": lrs, "gae_lambda": lams}
    _, metrics = torch.func.vmap(a2c.make_train(config, env, params))(keys, hp)
    for i in range(2):
        changes = {"learning_rate": float(lrs[i]), "gae_lambda": float(lams[i])}
        _, m_i = a2c.make_train(a2c.Config(**{**config.__dict__, **changes}), env, params)(keys[i])
        assert_match(m_i, tree.index(metrics, i))
    assert not torch.allclose(metrics["v_loss"][0], metrics["v_loss"][1])


# ---------------------------------------------------------------- errors
def test_bad_inputs(cartpole):
    env, params = cartpole
    with pytest.raises(ValueError, match="config.learning_rate"):
        a2c.Config(learning_rate=0.0)
    with pytest.raises(ValueError, match="config.gae_lambda"):
        a2c.Config(gae_lambda=1.5)
    with pytest.raises(ValueError, match="config.alpha"):
        a2c.Config(alpha=-0.1)
    with pytest.raises(ValueError, match="config.num_envs"):
        a2c.Config(num_envs=0)
    with pytest.raises(ValueError, match="config.use_rms_prop"):
        a2c.Config(use_rms_prop="yes")
    with pytest.raises(ValueError, match="config.vf_coef"):
        a2c.Config(vf_coef=-1.0)
    with pytest.raises(ValueError, match="config.normalize_advantage"):
        a2c.Config(num_envs=1, num_steps=1, normalize_advantage=True)
    multi = MultiDiscreteActions()
    with pytest.raises(ValueError, match="Discrete or Box"):
        a2c.make_train(a2c.Config(), multi, multi.default_params())
    train = a2c.make_train(_cartpole_config(), env, params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train(jr.key(0), {"clip_coef": 0.1})
    with pytest.raises(ValueError, match="hparams\\['gamma'\\]"):
        train(jr.key(0), {"gamma": torch.tensor([0.9, 0.99])})
