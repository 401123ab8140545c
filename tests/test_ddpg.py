"""Tests of funrl.algorithms.ddpg: probe environments, gating, the DPG gradient, batching identities."""

import dataclasses

import pytest
import torch

from funrl import random as jr
from funrl import tree
from funrl.algorithms import ddpg
from funrl.envs import make
from funrl.envs.probes import Alternating, ContinuousBandit, TwoStep
from helpers import assert_buffer_stores_final_obs_and_termination, assert_driver_matches_vmap_train, assert_match, q_grid


# ---------------------------------------------------------------- probes (funrl.envs.probes)
# Actions in [-1, 1]; each env isolates one part of an actor-critic update, so a
# sign error, a wrong bootstrap or a wrong next observation gives visibly wrong
# actions or Q-values.
def _probe_config(**kw):
    base = dict(
        total_timesteps=300,  # measured: the bandit's action is within ~0.1 of 0.5 after 300 updates
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
    return ddpg.Config(**base)


def _train_probe(env, config, seed=0):
    params = env.default_params()
    state, metrics = ddpg.make_train(config, env, params)(jr.key(seed))
    spec = ddpg.box_spec(env, params)
    critic = ddpg.q_network(spec, config.hidden_sizes)
    return state, metrics, lambda s_values: q_grid(critic.apply, state.params["critic"], s_values)


def test_probe_bandit_actor_finds_the_best_action():
    env = ContinuousBandit()
    config = _probe_config()
    state, metrics, q = _train_probe(env, config)
    act = ddpg.evaluation_policy(config, env, env.default_params())
    a = act(state, jr.key(0), torch.zeros(3, 1))
    assert a.shape == (3, 1)
    # a sign error in the actor's gradient drives the action to -1
    assert torch.allclose(a, torch.full((3, 1), 0.5), atol=0.15), a
    # the critic's maximiser on the grid [-1, -0.5, 0, 0.5, 1] is 0.5
    assert int(torch.argmax(q([0.0])[0])) == 3, q([0.0])
    assert float(metrics["episodes"][-1]) == 1.0 and float(metrics["episode_length"][-1]) == 1.0


def test_probe_two_step_discounting_and_constant_terminal_reward():
    _, _, q = _train_probe(TwoStep(continuous=True), _probe_config(total_timesteps=250))
    expected = torch.tensor([[0.5] * 5, [1.0] * 5])  # gamma = 0.5
    assert torch.allclose(q([0.0, 1.0]), expected, atol=0.06), q([0.0, 1.0])


def test_probe_truncation_bootstraps_from_final_obs():
    _, _, q = _train_probe(Alternating(continuous=True), _probe_config(total_timesteps=250))
    g = 0.5
    expected = torch.tensor([[1.0] * 5, [g] * 5]) / (1 - g * g)  # 4/3 and 2/3
    # wrong variants: truncation as termination -> Q(0) ~ 1.14; reset obs as next obs -> Q(0) ~ 1.6
    assert torch.allclose(q([0.0, 1.0]), expected, atol=0.08), q([0.0, 1.0])


def test_buffer_holds_real_next_obs_and_terminated_flag():
    config = _probe_config(train_frequency=3, total_timesteps=6, learning_starts=100)
    state = assert_buffer_stores_final_obs_and_termination(ddpg, config)
    # before learning_starts the actions are uniform in the action box
    assert bool((state.buffer.data["action"][:3].abs() <= 1.0).all())


def test_random_actions_before_learning_starts_cover_the_box():
    env, params = make("Pendulum-v1")  # actions in [-2, 2]
    config = ddpg.Config(total_timesteps=40, num_envs=4, learning_starts=40, batch_size=4, buffer_size=64, hidden_sizes=(4,))
    algo = ddpg.make_algorithm(config, env, params)
    state = algo.init(jr.key(2))
    for _ in range(10):
        state, _ = algo.update(state)
    actions = state.buffer.data["action"][:40, 0]
    assert float(actions.min()) >= -2.0 and float(actions.max()) <= 2.0
    # uniform on [-2, 2]: 40 draws spread far beyond the untrained tanh actor's output +- noise
    assert float(actions.min()) < -1.0 and float(actions.max()) > 1.0


# ---------------------------------------------------------------- gating, delays, targets
def test_learning_actor_delay_and_targets_are_gated():
    env = TwoStep(continuous=True)
    config = _probe_config(total_timesteps=10, learning_starts=4, policy_frequency=2, tau=0.5, batch_size=4)
    algo = ddpg.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(1))
    assert tree.equal(state.target_params, state.params)
    actor_steps = 0
    for u in range(algo.num_updates):
        prev = state
        state, _ = algo.update(state)
        assert int(state.global_step) == u + 1
        learning = u + 1 >= 4
        actor_turn = learning and u % 2 == 0  # CleanRL: global_step % policy_frequency == 0
        actor_steps += actor_turn
        assert tree.equal(state.params["critic"], prev.params["critic"]) != learning, u
        assert tree.equal(state.params["actor"], prev.params["actor"]) != actor_turn, u
        assert int(state.critic_opt_state[0].count) == max(0, u - 2)
        assert int(state.actor_opt_state[0].count) == actor_steps
        if actor_turn:
            expected = tree.map(lambda p, t: 0.5 * p + 0.5 * t, state.params, prev.target_params)
            assert tree.allclose(state.target_params, expected, rtol=0, atol=1e-7), u
        else:
            assert tree.equal(state.target_params, prev.target_params), u
    assert actor_steps == 3  # updates 4, 6, 8


def test_actor_step_is_the_gradient_of_minus_q_under_the_updated_critic():
    """The actor's first Adam moment after its first step is 0.1 * grad of CleanRL's -mean Q(s, mu(s)).

    On the bandit every stored observation is [0], so the sampled batch does
    not matter; the critic is the one updated in the same step (CleanRL's order).
    """
    env = ContinuousBandit()
    config = _probe_config(total_timesteps=4, learning_starts=4, batch_size=8)
    algo = ddpg.make_algorithm(config, env, env.default_params())
    state = algo.init(jr.key(5))
    for _ in range(3):
        state, _ = algo.update(state)
    prev = state
    state, _ = algo.update(state)  # update 3: the first critic and actor step
    assert int(state.actor_opt_state[0].count) == 1
    spec = ddpg.box_spec(env, env.default_params())
    actor = ddpg.deterministic_actor(spec, config.hidden_sizes)
    critic = ddpg.q_network(spec, config.hidden_sizes)
    obs = torch.zeros(config.batch_size, 1)

    def minus_q(p):
        return -critic.apply(state.params["critic"], obs, actor.apply(p, obs)).mean()

    g_ref = torch.func.grad(minus_q)(prev.params["actor"])
    g_algo = tree.map(lambda m: m / 0.1, state.actor_opt_state[0].mu)  # Adam: mu_1 = (1 - b1) g
    assert tree.allclose(g_algo, g_ref, rtol=1e-4, atol=1e-7)
    assert float(tree.global_norm(g_ref)) > 1e-3  # not trivially zero


def test_actor_output_is_scaled_to_the_action_box():
    env, params = make("Pendulum-v1")
    spec = ddpg.box_spec(env, params)
    actor = ddpg.deterministic_actor(spec, (8,))
    p = actor.init(jr.key(0))
    # saturate the tanh: the last layer's bias dominates
    p["linear_1"]["bias"] = torch.tensor([100.0])
    assert torch.allclose(actor.apply(p, torch.zeros(2, 3)), torch.full((2, 1), 2.0))
    p["linear_1"]["bias"] = torch.tensor([-100.0])
    assert torch.allclose(actor.apply(p, torch.zeros(2, 3)), torch.full((2, 1), -2.0))


# ---------------------------------------------------------------- batching identities on Pendulum
def _pendulum_config(**kw):
    base = dict(
        total_timesteps=24,
        num_envs=2,
        train_frequency=2,
        buffer_size=32,
        batch_size=8,
        learning_starts=8,
        hidden_sizes=(8, 8),
    )
    base.update(kw)
    return ddpg.Config(**base)


def test_vmap_train_equals_single_runs_and_is_deterministic(pendulum):
    env, params = pendulum
    config = _pendulum_config()
    train = ddpg.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    names = {"episode_return", "episode_length", "episodes", "critic_loss", "actor_loss", "q_value"}
    assert set(metrics) == names
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    s_again, m_again = train(keys[1])
    assert_match((s_again, m_again), (s_i, m_i))  # same key, same path: bit for bit
    assert states.global_step.tolist() == [24, 24] and states.buffer.size.tolist() == [24, 24]
    assert not tree.equal(tree.index(states.params, 0), tree.index(states.params, 1))


def test_driver_eager_equals_vmap_train(pendulum):
    env, params = pendulum
    keys = jr.split(jr.key(3), 2)
    seen = assert_driver_matches_vmap_train(ddpg, _pendulum_config(total_timesteps=16), env, params, keys, chunk_size=2)
    assert seen == [16, 32]  # 4 updates of 2 steps x 2 envs x 2 seeds, reported every 2 updates


def test_hyperparameter_batching_equals_separate_runs(pendulum):
    env, params = pendulum
    config = _pendulum_config(total_timesteps=16, learning_starts=4)
    hp = {"learning_rate": torch.tensor([1e-3, 3e-2]), "exploration_noise": torch.tensor([0.1, 0.5]), "tau": torch.tensor([0.5, 0.05])}
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(ddpg.make_train(config, env, params))(keys, hp)
    for i in range(2):
        separate = ddpg.make_train(
            dataclasses.replace(config, **{k: float(v[i]) for k, v in hp.items()}), env, params
        )
        _, m_i = separate(keys[i])
        assert_match(m_i, tree.index(metrics, i))
    assert not torch.equal(metrics["critic_loss"][0], metrics["critic_loss"][1])


# ---------------------------------------------------------------- errors
def test_bad_inputs(pendulum):
    env, params = pendulum
    with pytest.raises(ValueError, match="config.learning_rate"):
        ddpg.Config(learning_rate=-1.0)
    with pytest.raises(ValueError, match="config.tau"):
        ddpg.Config(tau=1.5)
    with pytest.raises(ValueError, match="config.learning_starts"):
        ddpg.Config(learning_starts=-1)
    with pytest.raises(ValueError, match="config.policy_frequency"):
        ddpg.Config(policy_frequency=0)
    with pytest.raises(ValueError, match="config.exploration_noise"):
        ddpg.Config(exploration_noise=-0.1)
    with pytest.raises(ValueError, match="config.hidden_sizes"):
        ddpg.Config(hidden_sizes=(0,))
    assert ddpg.Config(hidden_sizes=[8, 8]).hidden_sizes == (8, 8)  # a config.json round trip gives a list
    cartpole, c_params = make("CartPole-v1")
    with pytest.raises(ValueError, match="continuous"):
        ddpg.make_train(ddpg.Config(), cartpole, c_params)
    train = ddpg.make_train(_pendulum_config(), env, params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train(jr.key(0), {"lr": 0.1})
