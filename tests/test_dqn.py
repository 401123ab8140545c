"""Tests of funrl.algorithms.dqn: batching identities, probe environments, the CleanRL schedule."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl import random as jr
from funrl import tree
from funrl.algorithms import dqn
from funrl.envs import make
from funrl.envs.probes import ActionReward, Alternating, ConstantReward, ObservationReward, TwoStep
from helpers import assert_driver_matches_vmap_train, assert_match


# ---------------------------------------------------------------- probes (funrl.envs.probes)
# One-dimensional float observations, two actions; each env isolates one part of
# the DQN update so that a sign error, a broken gradient, a wrong bootstrap or a
# wrong next observation gives visibly wrong Q-values.
def _probe_config(**kw):
    base = dict(
        total_timesteps=200,  # measured: every probe is within 0.01 of its answer after ~150 updates
        num_envs=1,
        learning_rate=1e-2,
        buffer_size=200,
        gamma=0.5,
        tau=1.0,
        target_network_frequency=10,
        batch_size=32,
        start_e=1.0,
        end_e=1.0,
        learning_starts=32,
        train_frequency=1,
        hidden_sizes=(16,),
    )
    base.update(kw)
    return dqn.Config(**base)


def _train_probe(env, config, seed=0):
    params = env.default_params()
    train = dqn.make_train(config, env, params)
    state, metrics = train(jr.key(seed))
    _, q_values, _ = dqn._q_network(config, env, params)
    return state, metrics, lambda obs: q_values(state.params, torch.tensor(obs, dtype=torch.float32)[:, None])


def test_probe_constant_reward():
    _, metrics, q = _train_probe(ConstantReward(), _probe_config())
    assert torch.allclose(q([0.0]), torch.ones(1, 2), atol=0.05), q([0.0])
    assert float(metrics["episode_return"][-1]) == 1.0 and float(metrics["episode_length"][-1]) == 1.0


def test_probe_observation_reward_huber():
    _, _, q = _train_probe(ObservationReward(), _probe_config(loss="huber"))
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    assert torch.allclose(q([-1.0, 1.0]), expected, atol=0.05), q([-1.0, 1.0])


def test_probe_action_reward_and_greedy_policy():
    config = _probe_config()
    env = ActionReward()
    state, _, q = _train_probe(env, config)
    assert torch.allclose(q([0.0]), torch.tensor([[-1.0, 1.0]]), atol=0.05), q([0.0])
    act = dqn.evaluation_policy(config, env, env.default_params())
    assert act(state, jr.key(0), torch.zeros(3, 1)).tolist() == [1, 1, 1]


def test_probe_two_step_discounting():
    _, _, q = _train_probe(TwoStep(), _probe_config())
    expected = torch.tensor([[0.5, 0.5], [1.0, 1.0]])  # gamma = 0.5
    assert torch.allclose(q([0.0, 1.0]), expected, atol=0.05), q([0.0, 1.0])


def test_probe_truncation_bootstraps_from_final_obs_double_q():
    _, _, q = _train_probe(Alternating(), _probe_config(total_timesteps=250, double_q=True))
    g = 0.5
    expected = torch.tensor([[1.0, 1.0], [g, g]]) / (1 - g * g)  # 4/3 and 2/3
    # wrong variants: truncation as termination -> Q(0) ~ 1.14; reset obs as next obs -> Q(0) ~ 1.6
    assert torch.allclose(q([0.0, 1.0]), expected, atol=0.05), q([0.0, 1.0])


def test_buffer_holds_real_next_obs_and_terminated_flag():
    env = Alternating()
    config = _probe_config(train_frequency=3, total_timesteps=6, learning_starts=100)
    algo = dqn.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(0))
    state, _ = algo.update(state)  # one full episode of 3 steps, truncated at the third
    data = state.buffer.data
    assert data["obs"][:3, 0].tolist() == [0.0, 1.0, 0.0]
    assert data["next_obs"][:3, 0].tolist() == [1.0, 0.0, 1.0]  # the last is final_obs, not the reset's 0
    assert data["reward"][:3].tolist() == [1.0, 0.0, 1.0]
    assert data["terminated"][:3].tolist() == [0.0, 0.0, 0.0]
    assert state.actor.obs[:, 0].tolist() == [0.0]  # the auto-reset observation
    env2 = TwoStep()
    algo2 = dqn.make_algorithm(config, env2, env2.default_params())
    state2, _ = algo2.update(algo2.init(jr.key(0)))
    assert state2.buffer.data["terminated"][:3].tolist() == [0.0, 1.0, 0.0]
    assert int(state2.buffer.size) == 3 and int(state2.global_step) == 3


# ---------------------------------------------------------------- schedule, gating, target updates
def _cleanrl_linear_schedule(start_e, end_e, duration, t):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


@settings(max_examples=60, deadline=None)
@given(
    start_e=st.floats(0.0, 1.0),
    end_e=st.floats(0.0, 1.0),
    duration=st.integers(1, 10**6),
    t=st.integers(0, 2 * 10**6),
)
def test_epsilon_schedule_matches_cleanrl(start_e, end_e, duration, t):
    got = float(dqn.epsilon_schedule(start_e, end_e, float(duration), torch.tensor(t)))
    if end_e <= start_e:
        assert math.isclose(got, _cleanrl_linear_schedule(start_e, end_e, duration, t), abs_tol=1e-6)
    lo, hi = min(start_e, end_e), max(start_e, end_e)
    assert lo - 1e-6 <= got <= hi + 1e-6
    if t >= duration:
        assert math.isclose(got, end_e, abs_tol=1e-6)


def test_epsilon_schedule_hand_values():
    # CleanRL's CartPole run: 1 -> 0.05 over 250k steps
    assert float(dqn.epsilon_schedule(1.0, 0.05, 250_000.0, torch.tensor(125_000))) == pytest.approx(0.525)
    assert float(dqn.epsilon_schedule(1.0, 0.1, 0.0, torch.tensor(0))) == pytest.approx(0.1)  # no annealing
    assert float(dqn.epsilon_schedule(0.2, 0.6, 10.0, torch.tensor(5))) == pytest.approx(0.4)  # upwards too


def test_learning_and_target_updates_are_gated():
    env = ConstantReward()
    config = _probe_config(train_frequency=2, learning_starts=6, target_network_frequency=4, total_timesteps=16, tau=0.5)
    algo = dqn.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(1))
    init_params = state.params
    history = []
    for _ in range(algo.num_updates):
        prev = state
        state, _ = algo.update(state)
        history.append((prev, state))
    for prev, new in history:
        step = int(new.global_step)
        learning = step >= 6
        assert tree.equal(new.params, prev.params) != learning, step
        assert int(new.learner.opt_state[0].count) == max(0, (step - 6) // 2 + 1)
        crossed = step // 4 > (step - 2) // 4
        if learning and crossed:
            expected = tree.map(lambda o, t: 0.5 * o + 0.5 * t, new.params, prev.learner.target_params)
            assert tree.allclose(new.learner.target_params, expected, rtol=0, atol=1e-7), step
        else:
            assert tree.equal(new.learner.target_params, prev.learner.target_params), step
    assert tree.equal(history[0][0].learner.target_params, init_params)


def test_loss_option_selects_the_loss():
    # a fresh net has |Q| < 1 here, so every TD error lies in (99, 101):
    # squared error ~ 1e4 (CleanRL's mse), Huber(delta=1) = |td| - 0.5 ~ 99.5
    env = ConstantReward(reward=100.0)  # TD errors near 100, where the Huber and squared losses part ways
    losses = {}
    for loss in ("mse", "huber"):
        config = _probe_config(loss=loss, total_timesteps=2, learning_starts=1000)
        _, metrics = dqn.make_train(config, env, env.default_params())(jr.key(0))
        losses[loss] = metrics["td_loss"]
    assert bool(((losses["mse"] > 99.0**2) & (losses["mse"] < 101.0**2)).all()), losses
    assert bool(((losses["huber"] > 98.5) & (losses["huber"] < 100.5)).all()), losses


def test_double_q_target_selects_with_the_online_net():
    env = Alternating()  # never terminates, so every target bootstraps
    losses = {}
    for double_q in (False, True):
        config = _probe_config(double_q=double_q, total_timesteps=1, learning_starts=0)
        algo = dqn.make_algorithm(config, env, env.default_params())
        state = algo.init(jr.key(2))
        _, same = algo.update(state)  # target == online: argmax_online is argmax_target
        # a target net that is the online net negated: argmax_online = argmin_target,
        # so Double-DQN bootstraps from min_a q_target where DQN takes the max
        flipped = dict(state.params)
        flipped["linear_1"] = tree.map(torch.neg, state.params["linear_1"])
        _, other = algo.update(state._replace(learner=state.learner._replace(target_params=flipped)))
        losses[double_q] = (same["td_loss"], other["td_loss"])
    assert torch.equal(losses[True][0], losses[False][0])
    assert not torch.allclose(losses[True][1], losses[False][1])


def test_max_grad_norm_clips_before_adam():
    # Adam's first step is g / (|g| + eps): about lr per weight for any sizeable g,
    # but nearly 0 once g is clipped to a global norm far below eps
    env = ConstantReward()
    moved = {}
    for clip in (None, 1e-12):
        config = _probe_config(total_timesteps=1, learning_starts=0, max_grad_norm=clip, learning_rate=1e-2)
        state, _ = dqn.make_train(config, env, env.default_params())(jr.key(3))
        init = dqn.make_algorithm(config, env, env.default_params()).init(jr.key(3))
        moved[clip] = max(float((a - b).abs().max()) for a, b in zip(tree.leaves(state.params), tree.leaves(init.params)))
    assert moved[None] == pytest.approx(1e-2, rel=0.05)
    assert moved[1e-12] < 1e-5


# ---------------------------------------------------------------- batching identities on CartPole
def _cartpole_config(**kw):
    base = dict(
        total_timesteps=48,
        num_envs=2,
        buffer_size=32,
        batch_size=8,
        learning_starts=8,
        train_frequency=3,
        target_network_frequency=12,
        exploration_fraction=0.5,
        hidden_sizes=(8,),
    )
    base.update(kw)
    return dqn.Config(**base)


def test_vmap_train_equals_single_runs_and_is_deterministic(cartpole):
    env, params = cartpole
    config = _cartpole_config()
    train = dqn.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    assert set(metrics) == {"episode_return", "episode_length", "episodes", "td_loss", "q_values", "epsilon"}
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    s_again, m_again = train(keys[1])
    assert_match((s_again, m_again), (s_i, m_i))  # same key, same path: bit for bit
    # counters: num_envs transitions per rollout step
    assert states.global_step.tolist() == [48, 48] and states.buffer.size.tolist() == [32, 32]
    assert not tree.equal(tree.index(states.params, 0), tree.index(states.params, 1))


def test_driver_eager_equals_vmap_train(cartpole):
    env, params = cartpole
    keys = jr.split(jr.key(3), 2)
    seen = assert_driver_matches_vmap_train(dqn, _cartpole_config(total_timesteps=24), env, params, keys, chunk_size=2)
    assert seen == [24, 48]  # 4 updates of 3 steps x 2 envs x 2 seeds, reported every 2 updates


def test_hyperparameter_batching_equals_separate_runs(cartpole):
    env, params = cartpole
    config = _cartpole_config(total_timesteps=24)
    lrs = torch.tensor([1e-3, 3e-2])
    gammas = torch.tensor([0.9, 0.5])
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(dqn.make_train(config, env, params))(keys, {"learning_rate": lrs, "gamma": gammas})
    for i in range(2):
        separate = dqn.make_train(
            dqn.Config(**{**config.__dict__, "learning_rate": float(lrs[i]), "gamma": float(gammas[i])}), env, params
        )
        _, m_i = separate(keys[i])
        assert_match(m_i, tree.index(metrics, i))
    assert not torch.equal(metrics["td_loss"][0], metrics["td_loss"][1])


# ---------------------------------------------------------------- errors
def test_bad_inputs(cartpole):
    env, params = cartpole
    with pytest.raises(ValueError, match="config.learning_rate"):
        dqn.Config(learning_rate=-1.0)
    with pytest.raises(ValueError, match="config.gamma"):
        dqn.Config(gamma=1.5)
    with pytest.raises(ValueError, match="config.learning_starts"):
        dqn.Config(learning_starts=-1)
    with pytest.raises(ValueError, match="config.loss"):
        dqn.Config(loss="l1")
    with pytest.raises(ValueError, match="config.train_frequency"):
        dqn.Config(train_frequency=0)
    with pytest.raises(ValueError, match="config.max_grad_norm"):
        dqn.Config(max_grad_norm=0.0)
    pendulum, p_params = make("Pendulum-v1")
    with pytest.raises(ValueError, match="Discrete"):
        dqn.make_train(dqn.Config(), pendulum, p_params)
    train = dqn.make_train(_cartpole_config(), env, params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train(jr.key(0), {"lr": 0.1})
