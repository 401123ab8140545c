"""Parity of funrl's classic-control envs with gymnasium 1.x (the reference), plus batching checks.

Single steps from hypothesis-drawn states/actions are compared in float64 to
1e-9 (torch and numpy sin/cos may differ by an ULP; numpy computes Pendulum's
``u**2`` for a float32 scalar one ULP off the correctly rounded square).
gymnasium's MountainCarContinuous stores its state as float32 after a step,
so there the comparison is to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl import random as jr
from funrl import tree
from funrl.envs import make, vmap_reset, vmap_step
from funrl.envs.acrobot import AcrobotState
from funrl.envs.cartpole import CartPoleState
from funrl.envs.mountain_car import MountainCarState
from funrl.envs.pendulum import PendulumState
from helpers import assert_match

F64 = torch.float64
PI = math.pi


# Per env: state class, state field ranges for hypothesis, action kind, and the
# observation gymnasium computes from its float64 state (used as the 1e-9 reference).
def _cartpole_obs(s):
    return np.asarray(s, dtype=np.float64)


def _pendulum_obs(s):
    return np.array([np.cos(s[0]), np.sin(s[0]), s[1]])


def _acrobot_obs(s):
    return np.array([np.cos(s[0]), np.sin(s[0]), np.cos(s[1]), np.sin(s[1]), s[2], s[3]])


ENVS = {
    "CartPole-v1": (CartPoleState, [(-2.6, 2.6), (-3, 3), (-0.25, 0.25), (-3, 3)], ("discrete", 2), _cartpole_obs),
    "Pendulum-v1": (PendulumState, [(-10, 10), (-8, 8)], ("box", 3.0), _pendulum_obs),
    "MountainCar-v0": (MountainCarState, [(-1.2, 0.6), (-0.07, 0.07)], ("discrete", 3), _cartpole_obs),
    "MountainCarContinuous-v0": (MountainCarState, [(-1.2, 0.6), (-0.07, 0.07)], ("box", 2.0), _cartpole_obs),
    "Acrobot-v1": (
        AcrobotState,
        [(-PI, PI), (-PI, PI), (-4 * PI, 4 * PI), (-9 * PI, 9 * PI)],
        ("discrete", 3),
        _acrobot_obs,
    ),
}

_GYM: dict = {}


def _gym(env_id):
    """One unwrapped gymnasium env per id (no TimeLimit/checker), reset once."""
    if env_id not in _GYM:
        g = gymnasium.make(env_id).unwrapped
        g.reset(seed=0)
        _GYM[env_id] = g
    return _GYM[env_id]


def _fields(state) -> list[str]:
    return [f.name for f in dataclasses.fields(state) if f.name != "time"]


def _to_np(state) -> np.ndarray:
    return np.array([float(getattr(state, f)) for f in _fields(state)], dtype=np.float64)


def _state(cls, values, dtype=F64):
    names = [f.name for f in dataclasses.fields(cls) if f.name != "time"]
    kw = {n: torch.tensor(v, dtype=dtype) for n, v in zip(names, values)}
    return cls(**kw, time=torch.tensor(0))


def _actions(kind):
    if kind[0] == "discrete":
        return st.integers(0, kind[1] - 1)
    return st.floats(-kind[1], kind[1], width=32)


def _torch_action(kind, a):
    if kind[0] == "discrete":
        return torch.tensor(int(a))
    return torch.tensor([a], dtype=torch.float32)  # gymnasium's float32 action


def _gym_action(kind, a):
    if kind[0] == "discrete":
        return int(a)
    return np.array([a], dtype=np.float32)


def _gym_step(env_id, g, s_np, a):
    g.state = s_np.copy()
    if hasattr(g, "steps_beyond_terminated"):
        g.steps_beyond_terminated = None
    obs, r, term, trunc, _ = g.step(a)
    return obs, float(r), bool(term), np.asarray(g.state, dtype=np.float64)


def _check_step(env_id, values, a):
    cls, _, kind, obs_fn = ENVS[env_id]
    env, p = make(env_id, dtype=F64)
    g = _gym(env_id)
    s = _state(cls, values)
    obs, s2, r, term, info = env.step_env(jr.key(0), s, _torch_action(kind, a), p)
    g_obs, g_r, g_term, g_s = _gym_step(env_id, g, _to_np(s), _gym_action(kind, a))
    ours = _to_np(s2)
    if env_id == "MountainCarContinuous-v0":
        # gymnasium rounds its state to float32 after every step
        np.testing.assert_allclose(ours, g_s, rtol=2**-23, atol=1e-9)
    else:
        np.testing.assert_allclose(ours, g_s, rtol=0, atol=1e-9)
    np.testing.assert_allclose(obs.numpy(), obs_fn(g_s), rtol=2**-23 if env_id.startswith("MountainCarC") else 0, atol=1e-9)
    np.testing.assert_allclose(obs.numpy(), g_obs, rtol=2**-23, atol=1e-9)  # gymnasium's obs is float32
    assert float(r) == pytest.approx(g_r, rel=0, abs=1e-9)
    assert bool(term) == g_term
    assert obs.dtype == F64 and r.dtype == F64 and term.dtype == torch.bool and int(s2.time) == 1


def _parity_test(env_id):
    cls, ranges, kind, _ = ENVS[env_id]
    strategy = st.tuples(*[st.floats(lo, hi) for lo, hi in ranges])

    @settings(max_examples=120, deadline=None)
    @given(values=strategy, a=_actions(kind))
    def run(values, a):
        _check_step(env_id, values, a)

    run()


@pytest.mark.parametrize("env_id", list(ENVS))
def test_single_step_matches_gymnasium(env_id):
    _parity_test(env_id)


def test_edge_cases_match_gymnasium():
    # cart/pole beyond the thresholds (terminal), mountain car at the left wall with
    # negative velocity (velocity zeroed), at the goal, clipped torques/forces
    _check_step("CartPole-v1", [2.4, 1.0, 0.0, 0.0], 1)
    _check_step("CartPole-v1", [0.0, 0.0, -0.2094, -2.0], 0)
    _check_step("MountainCar-v0", [-1.2, -0.07], 0)
    _check_step("MountainCar-v0", [0.499, 0.05], 2)
    _check_step("MountainCarContinuous-v0", [-1.19, -0.06], -2.0)
    _check_step("MountainCarContinuous-v0", [0.44, 0.06], 1.5)
    _check_step("Pendulum-v1", [PI, 8.0], 2.5)
    _check_step("Acrobot-v1", [PI, -PI, 4 * PI, -9 * PI], 2)
    _check_step("Acrobot-v1", [3.1, 3.1, 12.0, 28.0], 0)  # angles wrap


@pytest.mark.parametrize("env_id", list(ENVS))
def test_300_step_trajectories_match_gymnasium(env_id):
    """Same actions for 300 steps; gymnasium free-runs from our reset state (re-synced only at
    episode ends, or every step for MountainCarContinuous whose state gymnasium keeps in float32)."""
    cls, _, kind, _ = ENVS[env_id]
    env, p = make(env_id, dtype=F64)
    g = _gym(env_id)
    rng = np.random.default_rng(hash(env_id) % 2**32)
    _, s = env.reset(jr.key(1), p)
    g.state = _to_np(s)
    if hasattr(g, "steps_beyond_terminated"):
        g.steps_beyond_terminated = None
    resync_every_step = env_id == "MountainCarContinuous-v0"
    worst = 0.0
    for t in range(300):
        if kind[0] == "discrete":
            a = int(rng.integers(kind[1]))
        else:
            a = float(np.float32(rng.uniform(-kind[1], kind[1])))
        if resync_every_step:
            g.state = _to_np(s)
        g_obs, g_r, g_term, _, _ = g.step(_gym_action(kind, a))
        _, s_next, r, term, trunc, info = env.step(jr.fold_in(jr.key(2), t), s, _torch_action(kind, a), p)
        worst = max(worst, float(np.abs(info["final_obs"].numpy() - g_obs).max()), abs(float(r) - g_r))
        assert bool(term) == g_term
        if bool(term) or bool(trunc):
            g.state = _to_np(s_next)  # both continue from funrl's reset state
            if hasattr(g, "steps_beyond_terminated"):
                g.steps_beyond_terminated = None
        else:
            worst = max(worst, float(np.abs(_to_np(s_next) - np.asarray(g.state, dtype=np.float64)).max()))
        s = s_next
    # observations are compared with gymnasium's float32 ones
    assert worst < 1e-6


# gymnasium's reset ranges per state variable (low, high); velocity of mountain car is exactly 0
RESET_RANGES = {
    "CartPole-v1": [(-0.05, 0.05)] * 4,
    "Pendulum-v1": [(-PI, PI), (-1.0, 1.0)],
    "MountainCar-v0": [(-0.6, -0.4), (0.0, 0.0)],
    "MountainCarContinuous-v0": [(-0.6, -0.4), (0.0, 0.0)],
    "Acrobot-v1": [(-0.1, 0.1)] * 4,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("env_id", list(ENVS))
def test_reset_distribution_matches_gymnasium(env_id, dtype):
    env, p = make(env_id, dtype=dtype)
    n = 20000
    obs, s = vmap_reset(env, jr.split(jr.key(3), n), p)
    assert obs.dtype == dtype and obs.shape == (n,) + env.observation_space(p).shape
    assert torch.equal(s.time, torch.zeros(n, dtype=torch.int64))
    vals = torch.stack([getattr(s, f) for f in _fields(s)], -1).double()
    assert vals.dtype == torch.float64
    # gymnasium's own resets: inside the same ranges, same means (two-sample z-test)
    g = gymnasium.make(env_id).unwrapped
    gvals = []
    for i in range(2000):
        g.reset(seed=i)
        gvals.append(np.asarray(g.state, dtype=np.float64))
    gvals = torch.tensor(np.array(gvals))
    for j, (lo, hi) in enumerate(RESET_RANGES[env_id]):
        x = vals[:, j]
        assert float(x.min()) >= lo - 1e-7 and float(x.max()) <= hi + 1e-7
        assert float(gvals[:, j].min()) >= lo - 1e-7 and float(gvals[:, j].max()) <= hi + 1e-7
        if hi == lo:
            assert bool((x == lo).all())
            continue
        mu, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
        assert abs(float(x.mean()) - mu) < 5 * math.sqrt(var / n)
        assert float(x.var()) == pytest.approx(var, rel=0.03)
        z = (float(x.mean()) - float(gvals[:, j].mean())) / math.sqrt(var / n + var / 2000)
        assert abs(z) < 5
    # observations are the documented function of the state
    obs_fn = ENVS[env_id][3]
    np.testing.assert_allclose(obs[:50].double().numpy(), np.stack([obs_fn(v) for v in vals[:50].numpy()]),
                               rtol=1e-6 if dtype == torch.float32 else 0, atol=1e-7 if dtype == torch.float32 else 1e-15)


@pytest.mark.parametrize("env_id", list(ENVS))
def test_spaces_match_gymnasium(env_id):
    env, p = make(env_id)  # float32, as gymnasium's spaces
    g = gymnasium.make(env_id).unwrapped
    assert env.observation_space(p).to_gymnasium() == g.observation_space
    assert env.action_space(p).to_gymnasium() == g.action_space


@pytest.mark.parametrize("env_id", list(ENVS))
def test_float32_default_dtypes(env_id):
    env, p = make(env_id)
    k = jr.key(4)
    obs, s = env.reset(k, p)
    a = env.action_space(p).sample(k)
    obs2, s2, r, term, trunc, info = env.step(k, s, a, p)
    for x in (obs, obs2, r, info["final_obs"]) + tuple(getattr(s2, f) for f in _fields(s2)):
        assert x.dtype == torch.float32
    assert term.dtype == torch.bool and trunc.dtype == torch.bool and s2.time.dtype == torch.int64
    assert obs2.shape == env.observation_space(p).shape and r.shape == ()


@pytest.mark.parametrize("env_id", list(ENVS))
def test_vmap_step_equals_python_loop(env_id):
    env, p = make(env_id, dtype=F64, max_episode_steps=4)
    n = 6
    keys = jr.split(jr.key(5), n)
    _, s = vmap_reset(env, keys, p)
    space = env.action_space(p)
    for t in range(5):  # crosses the time limit: auto-reset inside vmap
        ks = jr.split(jr.key(10 + t), n)
        a = torch.func.vmap(space.sample)(ks)
        out_v = vmap_step(env, ks, s, a, p)
        out_l = tree.stack([env.step(ks[i], tree.index(s, i), a[i], p) for i in range(n)])
        assert_match(out_v, out_l)  # env dynamics are element-wise: bit for bit
        s = out_v[1]
        if t == 3:  # the 4th step hits max_episode_steps: all truncated and reset
            assert bool(out_v[4].all()) and torch.equal(s.time, torch.zeros(n, dtype=torch.int64))
    assert torch.equal(s.time, torch.ones(n, dtype=torch.int64))


def test_vmapped_params_give_per_env_dynamics():
    """Different pole lengths per env in one vmap equal separately made envs."""
    lengths = [0.25, 0.5, 1.0, 2.0]
    made = [make("CartPole-v1", dtype=F64, length=length) for length in lengths]
    env = made[0][0]
    batched = tree.stack([p for _, p in made])
    n = len(lengths)
    keys = jr.split(jr.key(6), n)
    _, s0 = env.reset(jr.key(7), made[0][1])
    s = tree.stack([s0] * n)  # same start, different physics
    a = torch.ones(n, dtype=torch.int64)
    for t in range(3):
        out = vmap_step(env, keys, s, a, batched, batched_params=True)
        for i, (_, p) in enumerate(made):
            ref = env.step(keys[i], tree.index(s, i), a[i], p)
            assert_match(tree.index(out, i), ref)  # element-wise dynamics: bit for bit
        s = out[1]
    assert len({round(float(v), 12) for v in out[1].theta_dot}) == n
    # the batched params also work through vmap_reset
    _, sr = vmap_reset(env, keys, batched, batched_params=True)
    assert sr.x.shape == (n,)


def test_pendulum_action_dtype_controls_torque_arithmetic():
    """A float32 torque reproduces gymnasium's float32 action arithmetic; a float64 one stays in float64."""
    env, p = make("Pendulum-v1", dtype=F64)
    s = _state(PendulumState, [0.3, 0.1])
    u = 1.2345678
    r32 = env.step_env(jr.key(0), s, torch.tensor([u], dtype=torch.float32), p)[2]
    r64 = env.step_env(jr.key(0), s, torch.tensor([u], dtype=F64), p)[2]
    u32 = float(np.float32(u))
    th = 0.3
    ref64 = -((((th + PI) % (2 * PI)) - PI) ** 2 + 0.1 * 0.1**2 + 0.001 * u**2)
    ref32 = -((((th + PI) % (2 * PI)) - PI) ** 2 + 0.1 * 0.1**2 + float(np.float32(0.001) * np.float32(u32 * u32)))
    assert float(r64) == pytest.approx(ref64, rel=0, abs=1e-15)
    assert float(r32) == pytest.approx(ref32, rel=0, abs=1e-15)
    assert float(r32) != float(r64)


def test_acrobot_torque_noise_param():
    env, p = make("Acrobot-v1", dtype=F64)
    s = _state(AcrobotState, [0.1, -0.2, 0.3, 0.4])
    quiet = env.step_env(jr.key(0), s, torch.tensor(1), p)
    noisy_p = dataclasses.replace(p, torque_noise_max=torch.tensor(0.5, dtype=F64))
    noisy = [env.step_env(jr.key(k), s, torch.tensor(1), noisy_p)[1].dtheta2 for k in range(3)]
    assert len({float(x) for x in noisy}) == 3 and all(float(x) != float(quiet[1].dtheta2) for x in noisy)
    # noise 0: the key does not matter
    assert tree.equal(quiet, env.step_env(jr.key(9), s, torch.tensor(1), p))


def test_make_with_one_value_per_env_batches_every_param_leaf():
    lengths = torch.tensor([0.25, 0.5, 1.0], dtype=F64)
    env, batched = make("CartPole-v1", dtype=F64, length=lengths, masspole=0.2)
    for i, length in enumerate(lengths.tolist()):
        _, alone = make("CartPole-v1", dtype=F64, length=length, masspole=0.2)
        assert tree.equal(tree.index(batched, i), alone)
    keys = jr.split(jr.key(3), 3)
    obs, states = vmap_reset(env, keys, batched, batched_params=True)
    assert obs.shape == (3, 4)
    with pytest.raises(ValueError, match=r"length: expected shape \(\), or \(N, \*\(\)\)"):
        make("CartPole-v1", length=torch.ones(2, 2))
    with pytest.raises(ValueError, match="leading size N"):
        make("CartPole-v1", length=torch.ones(2), masspole=torch.ones(3))
