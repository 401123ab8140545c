"""Tests of funrl.envs.probes: each probe's documented dynamics and answers, batching, errors."""

import pytest
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.envs import spaces, vmap_reset, vmap_step
from funrl.envs.probes import (
    ActionReward,
    Alternating,
    CoinFlipBandit,
    ConstantReward,
    ContinuousBandit,
    ObservationReward,
    Probe,
    ProbeState,
    TwoStep,
)
from helpers import assert_match

DISCRETE = [ConstantReward(), ObservationReward(), ActionReward(), TwoStep(), Alternating()]
CONTINUOUS = [
    ConstantReward(continuous=True),
    ObservationReward(continuous=True),
    ContinuousBandit(),
    TwoStep(continuous=True),
    Alternating(continuous=True),
]
COIN = [CoinFlipBandit(mode) for mode in CoinFlipBandit.REWARDS]
ALL = DISCRETE + CONTINUOUS + COIN


def _action(env, value):
    if isinstance(env.action_space(), spaces.Box):
        return torch.tensor([float(value)])
    return torch.tensor(int(value))


def _step(env, state, action, key=jr.key(1)):
    return env.step(key, state, _action(env, action), env.default_params())


# ---------------------------------------------------------------- spaces and state
@pytest.mark.parametrize("env", ALL, ids=repr)
def test_spaces_state_and_observation(env):
    params = env.default_params()
    assert params.max_episode_steps.dtype == torch.int64 and params.max_episode_steps.shape == ()
    obs, state = env.reset(jr.key(0), params)
    assert isinstance(env, Probe) and isinstance(state, ProbeState)
    assert obs.shape == (1,) and obs.dtype == torch.float32 and torch.equal(obs, state.s[None])
    assert state.time.dtype == torch.int64 and int(state.time) == 0
    assert env.observation_space(params).contains(obs)
    space = env.action_space(params)
    if env in CONTINUOUS:
        assert isinstance(space, spaces.Box) and space.shape == (1,)
        assert float(space.low) == -1.0 and float(space.high) == 1.0
    else:
        assert isinstance(space, spaces.Discrete) and space.n == 2 and env.num_actions == 2


def test_lazy_module_and_repr():
    assert funrl.envs.probes.TwoStep is TwoStep
    assert "probes" in dir(funrl.envs)
    assert repr(TwoStep(continuous=True)) == "TwoStep(continuous=True)"
    assert repr(Alternating()) == "Alternating(horizon=3, continuous=False)"
    assert repr(ActionReward()) == "ActionReward()"
    assert repr(CoinFlipBandit("action")) == "CoinFlipBandit(reward='action')"


# ---------------------------------------------------------------- one-step probes
@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("reward", [1.0, 100.0, -2.5])
def test_constant_reward(reward, continuous):
    env = ConstantReward(reward=reward, continuous=continuous)
    obs, state = env.reset(jr.key(0))
    assert obs.tolist() == [0.0]
    for a in (0, 1):
        obs, _, r, terminated, truncated, info = _step(env, state, a)
        assert float(r) == reward and r.dtype == torch.float32 and r.shape == ()
        assert bool(terminated) and not bool(truncated)
        assert obs.tolist() == [0.0] and info["final_obs"].tolist() == [0.0]


@pytest.mark.parametrize("continuous", [False, True])
def test_observation_reward_is_the_observation(continuous):
    env = ObservationReward(continuous=continuous)
    seen = set()
    for i in range(32):
        obs, state = env.reset(jr.key(i))
        assert float(obs[0]) in (-1.0, 1.0)
        seen.add(float(obs[0]))
        for a in (0, 1):
            _, _, r, terminated, _, info = _step(env, state, a)
            assert float(r) == float(obs[0]) and bool(terminated)
            assert torch.equal(info["final_obs"], obs)
    assert seen == {-1.0, 1.0}


def test_action_reward():
    env = ActionReward()
    _, state = env.reset(jr.key(0))
    rewards = [float(_step(env, state, a)[2]) for a in (0, 1)]
    assert rewards == [-1.0, 1.0]
    assert bool(_step(env, state, 1)[3])


def test_continuous_bandit_reward_is_minus_squared_distance_to_target():
    for target in (0.5, -1.0, 0.0):
        env = ContinuousBandit(target=target)
        _, state = env.reset(jr.key(0))
        for a in (-1.0, -0.3, 0.0, 0.5, 1.0):
            _, _, r, terminated, truncated, _ = _step(env, state, a)
            assert float(r) == pytest.approx(-((a - target) ** 2), abs=1e-7)
            assert bool(terminated) and not bool(truncated)
    env = ContinuousBandit()
    _, state = env.reset(jr.key(0))
    grid = torch.linspace(-1, 1, 21)
    rewards = torch.stack([_step(env, state, float(a))[2] for a in grid])
    assert float(grid[int(rewards.argmax())]) == pytest.approx(0.5)


@pytest.mark.parametrize("mode", CoinFlipBandit.REWARDS)
def test_coin_flip_bandit(mode):
    env = CoinFlipBandit(mode)
    assert int(env.default_params().max_episode_steps) == 1
    assert float(env.observation_space(env.default_params()).high) == 1.0
    seen = set()
    for i in range(16):
        obs, state = env.reset(jr.key(i))
        s = float(obs[0])
        seen.add(s)
        for a in (0, 1):
            _, _, r, terminated, truncated, info = _step(env, state, a, key=jr.key(100 + i))
            expected = {"constant": 1.0, "action": float(a == 1), "obs_action": float(a == int(s > 0))}[mode]
            assert float(r) == expected, (s, a)
            assert bool(terminated) and bool(truncated)
            assert float(info["final_obs"][0]) in (-1.0, 1.0)
    assert seen == {-1.0, 1.0}


# ---------------------------------------------------------------- multi-step probes
@pytest.mark.parametrize("continuous", [False, True])
def test_two_step(continuous):
    env = TwoStep(continuous=continuous)
    obs, state = env.reset(jr.key(0))
    assert obs.tolist() == [0.0]
    obs, state, r, terminated, truncated, _ = _step(env, state, 0)
    assert obs.tolist() == [1.0] and float(r) == 0.0 and not bool(terminated) and not bool(truncated)
    assert int(state.time) == 1
    obs, state, r, terminated, truncated, info = _step(env, state, 1)
    assert float(r) == 1.0 and bool(terminated) and not bool(truncated)
    assert info["final_obs"].tolist() == [1.0]
    assert obs.tolist() == [0.0] and int(state.time) == 0  # the auto-reset


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("horizon", [3, 4])
def test_alternating_is_truncated_never_terminated(horizon, continuous):
    env = Alternating(horizon=horizon, continuous=continuous)
    assert int(env.default_params().max_episode_steps) == horizon
    obs, state = env.reset(jr.key(0))
    observations, rewards, finals, truncations = [float(obs[0])], [], [], []
    for t in range(horizon):
        obs, state, r, terminated, truncated, info = _step(env, state, t % 2)
        assert not bool(terminated)
        observations.append(float(obs[0]))
        rewards.append(float(r))
        finals.append(float(info["final_obs"][0]))
        truncations.append(bool(truncated))
    expected_s = [float(t % 2) for t in range(horizon + 1)]
    assert rewards == [1.0 - s for s in expected_s[:-1]]
    assert finals == expected_s[1:]  # the truncated step's final_obs is the real next s
    assert truncations == [False] * (horizon - 1) + [True]
    assert observations[-1] == 0.0 and int(state.time) == 0  # the auto-reset's s = 0


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_documented_values_satisfy_the_bellman_equation(gamma):
    """V(s) = r + gamma * V(final_obs) * (1 - terminated) on every step (time limits bootstrapped)."""
    g = gamma
    answers = [
        (ConstantReward(), {0.0: 1.0}),
        (ConstantReward(reward=100.0), {0.0: 100.0}),
        (TwoStep(), {0.0: g, 1.0: 1.0}),
        (Alternating(), {0.0: 1 / (1 - g * g), 1.0: g / (1 - g * g)}),
    ]
    for env, v in answers:
        obs, state = env.reset(jr.key(0))
        for t in range(6):
            s = float(obs[0])
            obs, state, r, terminated, _, info = _step(env, state, t % 2, key=jr.key(t))
            target = float(r) + g * v[float(info["final_obs"][0])] * (1.0 - float(terminated))
            assert v[s] == pytest.approx(target, rel=1e-6), (env, s)


# ---------------------------------------------------------------- batching
@pytest.mark.parametrize("env", ALL, ids=repr)
def test_vmap_reset_and_step_equal_single_envs(env):
    n = 8
    keys = jr.split(jr.key(3), n)
    obs, states = vmap_reset(env, keys)
    assert obs.shape == (n, 1) and states.s.shape == (n,) and states.time.shape == (n,)
    if env in CONTINUOUS:
        actions = torch.linspace(-1.0, 1.0, n)[:, None]
    else:
        actions = torch.arange(n) % 2
    step_keys = jr.split(jr.key(4), n)
    out = vmap_step(env, step_keys, states, actions)
    assert out[0].shape == (n, 1) and out[2].shape == (n,) and out[3].dtype == torch.bool
    for i in range(n):
        o_i, s_i = env.reset(keys[i])
        assert_match((o_i, s_i), tree.index((obs, states), i))
        assert_match(env.step(step_keys[i], s_i, actions[i]), tree.index(out, i))


def test_vmap_step_mixes_episode_boundaries():
    env = TwoStep()
    n = 4
    obs0, fresh = vmap_reset(env, jr.split(jr.key(0), n))
    _, stepped, *_ = vmap_step(env, jr.split(jr.key(1), n), fresh, torch.zeros(n, dtype=torch.int64))
    # envs 0 and 2 at the second step (s = 1), envs 1 and 3 at the first (s = 0)
    second = torch.tensor([True, False, True, False])
    states = tree.map(lambda a, b: torch.where(second, a, b), stepped, fresh)
    obs, states, reward, terminated, truncated, info = vmap_step(
        env, jr.split(jr.key(2), n), states, torch.ones(n, dtype=torch.int64)
    )
    assert reward.tolist() == [1.0, 0.0, 1.0, 0.0] and terminated.tolist() == second.tolist()
    assert not truncated.any()
    assert info["final_obs"][:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert obs[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]  # envs 0 and 2 auto-reset
    assert states.time.tolist() == [0, 1, 0, 1]


# ---------------------------------------------------------------- errors
def test_bad_actions_are_clear_errors():
    _, state = TwoStep().reset(jr.key(0))
    with pytest.raises(ValueError, match=r"action: expected an int in \[0, 1\]"):
        TwoStep().step(jr.key(0), state, torch.tensor(2))
    with pytest.raises(TypeError, match="action: expected an integer tensor"):
        TwoStep().step(jr.key(0), state, torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"action: expected shape \(\)"):
        TwoStep().step(jr.key(0), state, torch.tensor([1]))
    continuous = TwoStep(continuous=True)
    with pytest.raises(ValueError, match=r"action: expected shape \(1,\)"):
        continuous.step(jr.key(0), state, torch.tensor(0.5))
    with pytest.raises(TypeError, match="action: expected a floating-point tensor"):
        continuous.step(jr.key(0), state, torch.tensor([1]))
    with pytest.raises(TypeError, match="state: expected an env state"):
        TwoStep().step(jr.key(0), {"s": 0.0}, torch.tensor(0))


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(TypeError, match="continuous: expected a bool"):
        TwoStep(continuous=1)
    with pytest.raises(TypeError, match="reward: expected a number"):
        ConstantReward(reward="1")
    with pytest.raises(ValueError, match="reward: expected a finite number"):
        ConstantReward(reward=float("nan"))
    with pytest.raises(ValueError, match=r"target: expected a number in \[-1, 1\]"):
        ContinuousBandit(target=1.5)
    with pytest.raises(ValueError, match="horizon: expected an int >= 1"):
        Alternating(horizon=0)
    with pytest.raises(TypeError, match="horizon: expected an int"):
        Alternating(horizon=3.0)
    with pytest.raises(ValueError, match="reward: expected one of 'constant', 'action', 'obs_action'"):
        CoinFlipBandit("obs")
    with pytest.raises(NotImplementedError):
        Probe().step(jr.key(0), Probe().reset(jr.key(0))[1], torch.tensor(0))
