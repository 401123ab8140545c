"""Tests of funrl.algorithms.tabular: fixed points against exact DP, the update rule, batching identities."""

import pytest
import torch

from funrl import dp, tree
from funrl import random as jr
from funrl.algorithms import common, tabular
from funrl.envs import make
from funrl.envs.tabular import FiniteMDP, FrozenLake, random_mdp
from helpers import assert_match


def _config(**kw):
    # optimistic start: every step changes the table even before the goal is found
    base = dict(num_envs=8, num_steps=4, total_timesteps=8 * 4 * 3, learning_rate=0.5, gamma=0.9, initial_q=1.0)
    base.update(kw)
    return tabular.Config(**base)


# ---------------------------------------------------------------- fixed points, against exact DP
@pytest.mark.parametrize("method", tabular.METHODS)
@pytest.mark.parametrize("mdp_seed", [1, 2])
def test_td_methods_converge_to_their_fixed_points(method, mdp_seed):
    """Uniformly random behaviour (epsilon = 1) on a deterministic random MDP with a time limit.

    Q-learning learns Q* (value iteration); Sarsa and expected Sarsa learn the
    values of the behaviour policy (exact policy evaluation of the uniform
    policy).  The two fixed points differ by ~0.9 here.  Bootstrapping through
    the time limit (8 steps) is needed to reach the values of the MDP without it.
    """
    gamma = 0.5
    mdp = random_mdp(jr.key(mdp_seed), 4, 2, branching=1, max_episode_steps=8)
    P, R = mdp.absorbing_tables()
    q_star = dp.value_iteration(P, R, gamma, tol=1e-12).q
    uniform = torch.full((4, 2), 0.5, dtype=torch.float64)
    q_uniform = dp.q_from_v(dp.policy_evaluation(P, R, gamma, uniform), P, R, gamma)
    assert (q_star - q_uniform).abs().max() > 0.8
    # Sarsa's target samples a', so it needs a smaller step and keeps some noise
    lr, tol = (0.1, 0.15) if method == "sarsa" else (0.5, 1e-4)
    config = tabular.Config(
        method=method, num_envs=128, num_steps=40, total_timesteps=128 * 40 * 2, learning_rate=lr, gamma=gamma,
        start_e=1.0, end_e=1.0, anneal_lr=False,  # a constant step: the iterates hover around the fixed point
    )
    state, metrics = tabular.make_train(config, mdp, mdp.default_params())(jr.key(0))
    target = q_star if method == "q_learning" else q_uniform
    err = (state.q.to(torch.float64) - target).abs().max()
    assert err < tol, (method, err, state.q, target)
    assert metrics["epsilon"].tolist() == [1.0, 1.0]


def test_q_learning_finds_the_optimal_policy_of_frozen_lake():
    """FrozenLake 4x4 without slipping: the greedy policy's exact value equals V*(start), and it walks to the goal."""
    env = FrozenLake(is_slippery=False)
    params = env.default_params()
    P, R = env.absorbing_tables()
    v_star = dp.value_iteration(P, R, 0.9, tol=1e-12).v
    config = tabular.Config(
        num_envs=64, num_steps=50, total_timesteps=64 * 50 * 4, learning_rate=0.5, gamma=0.9, start_e=1.0, end_e=0.2
    )
    state, metrics = tabular.make_train(config, env, params)(jr.key(0))
    optimum = float(v_star[0])  # = 0.9 ** 5: six steps to the goal
    assert optimum == pytest.approx(0.9**5)
    assert float(metrics["greedy_value"][-1]) == pytest.approx(optimum, abs=1e-6)
    assert metrics["episode_return"][-1] > metrics["episode_return"][0]  # less exploration, more successes
    # the greedy policy reaches the goal in 6 steps
    act = tabular.evaluation_policy(config, env, params)
    obs, env_state = env.reset(jr.key(1), params)
    total = 0.0
    for t in range(6):
        obs, env_state, reward, terminated, truncated, _ = env.step(jr.key(t), env_state, act(state, jr.key(t), obs), params)
        total += float(reward)
    assert total == 1.0 and bool(terminated)


# ---------------------------------------------------------------- the update rule
def test_simultaneous_transitions_average_their_td_errors():
    """Eight envs take the only action in state 0 and land in terminal states 1 (reward 1) or 2 (reward 3).

    From Q = 0 every TD error is the reward, so after one step Q[0, 0] must be
    ``lr * mean(rewards)`` (the mean of the errors of the pair), not ``lr * sum``.
    """
    P = torch.zeros(3, 1, 3, dtype=torch.float64)
    P[0, 0, 1] = P[0, 0, 2] = 0.5
    P[1, 0, 1] = P[2, 0, 2] = 1.0
    R = torch.zeros(3, 1, 3, dtype=torch.float64)
    R[0, 0, 1], R[0, 0, 2] = 1.0, 3.0
    mdp = FiniteMDP(P, R, initial_distribution=[1.0, 0.0, 0.0], terminal_states=[1, 2])
    config = _config(method="q_learning", num_envs=8, num_steps=1, total_timesteps=8, learning_rate=0.5, initial_q=0.0)
    state, metrics = tabular.make_train(config, mdp, mdp.default_params())(jr.key(0))
    mean_reward = float(metrics["abs_td_error"][0])  # mean |td| = mean reward here
    assert 1.0 < mean_reward < 3.0  # both outcomes happened, so averaging is visible
    assert float(state.q[0, 0]) == pytest.approx(0.5 * mean_reward, abs=1e-6)
    assert state.q[1:].eq(0).all()
    assert float(metrics["episodes"][0]) == 8.0 and int(state.global_step) == 8


@pytest.mark.parametrize("anneal_lr", [False, True])
def test_annealed_step_size_by_hand(anneal_lr):
    """One env, one state, one action that ends the episode with reward 1: ``Q <- Q + lr_k (1 - Q)``.

    So after T steps ``Q = 1 - prod_k (1 - lr_k)``, with ``lr_k = lr`` or, annealed,
    ``lr (1 - k / T)`` for the step taken at global step ``k = 0 .. T-1``.
    """
    P = torch.zeros(2, 1, 2, dtype=torch.float64)
    P[0, 0, 1] = P[1, 0, 1] = 1.0
    R = torch.zeros(2, 1, 2, dtype=torch.float64)
    R[0, 0, 1] = 1.0
    mdp = FiniteMDP(P, R, initial_distribution=[1.0, 0.0], terminal_states=[1])
    T, lr = 4, 0.5
    config = _config(num_envs=1, num_steps=1, total_timesteps=T, learning_rate=lr, initial_q=0.0, anneal_lr=anneal_lr)
    state, _ = tabular.make_train(config, mdp, mdp.default_params())(jr.key(0))
    rates = [lr * (1 - k / T) if anneal_lr else lr for k in range(T)]
    expected = 1.0 - torch.tensor([1.0 - r for r in rates], dtype=torch.float64).prod()
    assert float(state.q[0, 0]) == pytest.approx(float(expected), abs=1e-6)
    assert float(expected) == pytest.approx(1 - 0.5 * 0.625 * 0.75 * 0.875 if anneal_lr else 1 - 0.5**4)


def test_sarsa_order_next_action_comes_from_the_pre_update_table():
    """After a step, the stored next action is epsilon-greedy with epsilon = 0 in the table before the update."""
    mdp = random_mdp(jr.key(4), 5, 3, branching=1)
    config = _config(method="sarsa", num_envs=6, num_steps=1, total_timesteps=6 * 5, start_e=0.0, end_e=0.0, initial_q=1.0)
    algo = tabular.make_algorithm(config, mdp, mdp.default_params())
    state = algo.init(jr.key(0))
    for _ in range(5):
        prev = state
        state, _ = algo.update(state)
        # greedy in prev.q at the new states (ties: any maximiser)
        q_prev = prev.q[state.obs]
        chosen = q_prev.gather(1, state.action[:, None]).squeeze(1)
        assert torch.equal(chosen, q_prev.amax(1))


# ---------------------------------------------------------------- batching identities
@pytest.fixture(scope="module")
def frozen_lake():
    return make("FrozenLake-v1")


@pytest.mark.parametrize("method", tabular.METHODS)
def test_vmap_train_equals_single_runs_and_is_deterministic(frozen_lake, method):
    env, params = frozen_lake
    config = _config(method=method)
    train = tabular.make_train(config, env, params)
    keys = jr.split(jr.key(0), 2)
    states, metrics = torch.func.vmap(train)(keys)
    assert set(metrics) == {"episode_return", "episode_length", "episodes", "abs_td_error", "epsilon", "greedy_value"}
    assert all(v.shape == (2, config.num_updates) for v in metrics.values())
    for i in range(2):
        s_i, m_i = train(keys[i])
        assert_match((s_i, m_i), tree.index((states, metrics), i))
    s_again, m_again = train(keys[1])
    assert_match((s_again, m_again), tree.index((states, metrics), 1))
    assert states.q.shape == (2, 16, 4) and states.global_step.tolist() == [96, 96]
    assert not torch.equal(states.q[0], states.q[1])


def test_driver_eager_equals_vmap_train(frozen_lake):
    env, params = frozen_lake
    config = _config(method="expected_sarsa", total_timesteps=8 * 4 * 4)
    keys = jr.split(jr.key(3), 2)
    states, metrics = torch.func.vmap(tabular.make_train(config, env, params))(keys)
    driver = common.Driver(tabular.make_algorithm, config, env, params, compile=False)
    seen = []
    r_state, r_metrics = driver.run(driver.init(keys), callback=lambda s, info: seen.append(info.env_steps), chunk_size=2)
    assert seen == [128, 256]  # 4 updates of 4 steps x 8 envs x 2 seeds, reported every 2 updates
    assert_match(r_metrics, metrics)  # both [seeds, updates]
    assert_match(r_state, states)


def test_hyperparameter_batching_equals_separate_runs(frozen_lake):
    env, params = frozen_lake
    config = _config()
    hp = {"learning_rate": torch.tensor([0.1, 0.9]), "gamma": torch.tensor([0.5, 0.95]), "end_e": torch.tensor([0.3, 0.0])}
    keys = jr.split(jr.key(7), 2)
    _, metrics = torch.func.vmap(tabular.make_train(config, env, params))(keys, hp)
    for i in range(2):
        changes = {k: float(v[i]) for k, v in hp.items()}
        _, m_i = tabular.make_train(tabular.Config(**{**config.__dict__, **changes}), env, params)(keys[i])
        assert_match(m_i, tree.index(metrics, i))
    assert not torch.equal(metrics["epsilon"][0], metrics["epsilon"][1])


# ---------------------------------------------------------------- errors
def test_bad_inputs(frozen_lake):
    env, params = frozen_lake
    with pytest.raises(ValueError, match="config.method"):
        tabular.Config(method="td_lambda")
    with pytest.raises(ValueError, match="config.learning_rate"):
        tabular.Config(learning_rate=-0.1)
    with pytest.raises(ValueError, match="config.end_e"):
        tabular.Config(end_e=1.5)
    with pytest.raises(ValueError, match="config.gamma"):
        tabular.Config(gamma=1.0)  # exact greedy-policy evaluation needs gamma < 1
    tabular.Config(gamma=1.0, track_greedy_value=False)
    with pytest.raises(ValueError, match="config.initial_q"):
        tabular.Config(initial_q="zero")
    with pytest.raises(ValueError, match="config.anneal_lr: expected a bool"):
        tabular.Config(anneal_lr=1)
    cartpole, c_params = make("CartPole-v1")
    with pytest.raises(ValueError, match="Discrete observation"):
        tabular.make_train(tabular.Config(track_greedy_value=False), cartpole, c_params)
    train = tabular.make_train(_config(), env, params)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        train(jr.key(0), {"epsilon": 0.1})
