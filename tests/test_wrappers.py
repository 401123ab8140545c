"""Tests for funrl.envs.wrappers: statistics vs hand sums / numpy / gymnasium, vmap, compile, errors."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funrl
from funrl import random as jr
from funrl import tree
from funrl.envs import Environment, make, spaces, vmap_reset, vmap_step
from funrl.envs import wrappers as W
from funrl.envs.tabular import MDPState
from helpers import assert_match


# ------------------------------------------------------------------ a small Box env for the tests
@tree.pytree_dataclass
class DriftParams:
    noise: torch.Tensor
    bound: torch.Tensor
    max_episode_steps: torch.Tensor


@tree.pytree_dataclass
class DriftState:
    x: torch.Tensor
    time: torch.Tensor


class Drift(Environment):
    """x' = x + 0.1 a + noise * N(0, 1); reward -|x'|^2; terminates when |x'| leaves the bound."""

    def default_params(self, dtype=torch.float32):
        return DriftParams(torch.tensor(0.3, dtype=dtype), torch.tensor(1.0, dtype=dtype), torch.tensor(7))

    def reset_env(self, key, params):
        x = jr.uniform(key, (2,), params.noise.dtype, -0.5, 0.5) + torch.tensor([3.0, -1.0], dtype=params.noise.dtype)
        return x, DriftState(x, torch.zeros_like(key[0]))

    def step_env(self, key, state, action, params):
        x = state.x + 0.1 * action + params.noise * jr.normal(key, (2,), params.noise.dtype)
        reward = -(x * x).sum()
        terminated = ((x - torch.tensor([3.0, -1.0], dtype=x.dtype)).abs() > params.bound).any()
        return x, DriftState(x, state.time + 1), reward, terminated, {"x0": x[0]}

    def observation_space(self, params=None):
        return spaces.Box(-float("inf"), float("inf"), (2,))

    def action_space(self, params=None):
        return spaces.Box(-2.0, 2.0, (2,))


def _actions(t, n=None, scale=3.0):
    shape = (2,) if n is None else (n, 2)
    return jr.uniform(jr.fold_in(jr.key(77), t), shape, torch.float32, -scale, scale)


def _rollout(env, steps, seed=0, params=None):
    """Eager single-env rollout; returns the list of step outputs and the reset obs."""
    obs, state = env.reset(jr.key(seed), params)
    outs = []
    for t in range(steps):
        out = env.step(jr.fold_in(jr.key(seed + 1), t), state, _actions(t), params)
        state = out[1]
        outs.append(out)
    return obs, outs


class Replay(gym.Env):
    """A gymnasium env replaying a recorded stream (to drive gymnasium's wrappers on it)."""

    def __init__(self, reset_obs, steps, obs_shape=(2,)):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float32)
        self.action_space = gym.spaces.Discrete(1)
        self.reset_obs = list(reset_obs)
        self.steps = list(steps)

    def reset(self, *, seed=None, options=None):
        return self.reset_obs.pop(0), {}

    def step(self, action):
        obs, reward, term, trunc = self.steps.pop(0)
        return obs, reward, term, trunc, {}


# ------------------------------------------------------------------ episode statistics
def test_episode_statistics_hand_computed_cliffwalking():
    env, params = make("CliffWalking-v0")
    w = W.LogWrapper(env)
    _, state = w.reset(jr.key(0), params)
    actions = [1, 0] + [1] * 11 + [2] + [0]  # cliff (-100), up, 11 x right, down to the goal, then one more step
    infos = []
    for t, a in enumerate(actions):
        _, state, r, term, trunc, info = w.step(jr.key(t), state, a, params)
        infos.append(info)
    done_at = [bool(i["returned_episode"]) for i in infos]
    assert done_at == [False] * 13 + [True, False]
    assert float(infos[13]["returned_episode_returns"]) == -100 - 13
    assert int(infos[13]["returned_episode_lengths"]) == 14
    # the last finished episode stays reported; running totals restarted
    assert float(infos[14]["returned_episode_returns"]) == -113 and int(state.episode_length) == 1
    assert float(state.episode_return) == -1.0
    assert all(float(i["returned_episode_returns"]) == 0 for i in infos[:13])


def test_episode_statistics_equal_hand_sums_with_truncation():
    env = Drift()
    _, outs = _rollout(W.EpisodeStatistics(env), 40)
    _, raw = _rollout(env, 40)
    ret, length, finished = 0.0, 0, []
    for (_, _, r, term, trunc, _), (_, _, r2, *_) in zip(outs, raw):
        assert torch.equal(r, r2)  # the wrapper leaves rewards alone
        ret += float(r)
        length += 1
        if bool(term | trunc):
            finished.append((ret, length))
            ret, length = 0.0, 0
    got = [(float(o[5]["returned_episode_returns"]), int(o[5]["returned_episode_lengths"])) for o in outs if bool(o[5]["returned_episode"])]
    assert len(got) == len(finished) >= 3
    assert any(bool(o[4]) for o in outs) and any(bool(o[3]) for o in outs)  # both kinds of ending occur
    for (g_r, g_l), (h_r, h_l) in zip(got, finished):
        assert g_l == h_l and g_r == pytest.approx(h_r, rel=1e-5)


# ------------------------------------------------------------------ observation normalisation
def _raw_stream(env, steps):
    """The raw observation stream a gymnasium single-env wrapper would see, plus step records."""
    obs0, outs = _rollout(env, steps)
    resets, records = [obs0.numpy()], []
    for obs, _, r, term, trunc, info in outs:
        records.append((info["final_obs"].numpy(), float(r), bool(term), bool(trunc)))
        if bool(term | trunc):
            resets.append(obs.numpy())
    return resets, records


def test_normalize_observation_matches_numpy_and_gymnasium():
    env = Drift()
    steps = 60
    resets, records = _raw_stream(env, steps)
    w = W.NormalizeObservation(env)
    obs0, outs = _rollout(w, steps)
    # gymnasium's NormalizeObservation on the same stream (reset after each end, as a vector env would)
    g = gym.wrappers.NormalizeObservation(Replay(resets, records))
    g_obs0, _ = g.reset()
    np.testing.assert_allclose(obs0.numpy(), g_obs0, rtol=1e-5, atol=1e-5)
    for (obs, _, _, term, trunc, info) in outs:
        g_final, _, g_term, g_trunc, _ = g.step(0)
        np.testing.assert_allclose(info["final_obs"].numpy(), g_final, rtol=1e-4, atol=1e-5)
        if g_term or g_trunc:
            g_reset, _ = g.reset()
            np.testing.assert_allclose(obs.numpy(), g_reset, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_allclose(obs.numpy(), g_final, rtol=1e-4, atol=1e-5)
    stats = outs[-1][1].obs_stats
    np.testing.assert_allclose(stats.mean.numpy(), g.obs_rms.mean, rtol=1e-5)
    np.testing.assert_allclose(stats.var.numpy(), g.obs_rms.var, rtol=1e-4)
    assert float(stats.count) == pytest.approx(g.obs_rms.count)
    # and numpy over the whole stream (the 1e-4 pseudo-count prior is negligible)
    seen = [resets[0]]
    k = 1
    for rec in records:
        seen.append(rec[0])
        if rec[2] or rec[3]:
            seen.append(resets[k])
            k += 1
    seen = np.stack(seen).astype(np.float64)
    assert float(stats.count) == pytest.approx(len(seen) + 1e-4)
    np.testing.assert_allclose(stats.mean.numpy(), seen.mean(0), rtol=1e-4)
    np.testing.assert_allclose(stats.var.numpy(), seen.var(0), rtol=1e-3)


def test_normalize_observation_clip_and_frozen_stats():
    env = Drift()
    w = W.NormalizeObservation(env, clip=0.5)
    _, outs = _rollout(w, 10)
    assert all(bool((o[0].abs() <= 0.5).all()) for o in outs)
    assert w.observation_space().low.tolist() == [-0.5, -0.5]
    frozen = W.NormalizeObservation(env, update=False)
    obs0, outs = _rollout(frozen, 5)
    raw0, raw = _rollout(env, 5)
    # mean 0, var 1 forever: normalisation is x / sqrt(1 + eps)
    torch.testing.assert_close(obs0, raw0 / (1 + 1e-8) ** 0.5)
    torch.testing.assert_close(outs[-1][0], raw[-1][0] / (1 + 1e-8) ** 0.5)


# ------------------------------------------------------------------ reward normalisation
def test_normalize_reward_matches_gymnasium():
    env = Drift()
    steps = 50
    resets, records = _raw_stream(env, steps)
    w = W.NormalizeReward(env, gamma=0.9)
    _, outs = _rollout(w, steps)
    g = gym.wrappers.NormalizeReward(Replay(resets, records), gamma=0.9)
    g.reset()
    for out in outs:
        _, g_r, g_term, g_trunc, _ = g.step(0)
        assert float(out[2]) == pytest.approx(float(g_r), rel=1e-4, abs=1e-6)
        if g_term or g_trunc:
            g.reset()
    st_ = outs[-1][1]
    assert float(st_.return_stats.var) == pytest.approx(float(g.return_rms.var), rel=1e-4)
    assert float(st_.discounted_return) == pytest.approx(float(g.discounted_reward[0]), rel=1e-5)


# ------------------------------------------------------------------ running statistics
@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
    seed=st.integers(0, 2**31),
)
def test_running_mean_std_parallel_update_matches_gymnasium(sizes, seed):
    from gymnasium.wrappers.utils import RunningMeanStd as GymRMS

    data = jr.normal(jr.key(seed), (sum(sizes), 3), torch.float64) * 2.0 + 1.0
    stats = W.running_mean_std_init((3,), torch.float64)
    ref = GymRMS(shape=(3,))
    i = 0
    for n in sizes:
        stats = W.running_mean_std_update(stats, data[i:i + n])
        ref.update(data[i:i + n].numpy())
        i += n
    np.testing.assert_allclose(stats.mean.numpy(), ref.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), ref.var, rtol=1e-12, atol=1e-12)
    assert float(stats.count) == pytest.approx(ref.count, rel=1e-15)
    # merging in chunks equals one merge of everything
    whole = W.running_mean_std_update(W.running_mean_std_init((3,), torch.float64), data)
    torch.testing.assert_close(whole.mean, stats.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(whole.var, stats.var, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ action wrappers
class Capture(gym.Env):
    """Records the action it receives (to read gymnasium's action transforms)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.last = None

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.last = np.array(action)
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_clip_and_rescale_actions_match_gymnasium():
    env = Drift()
    params = env.default_params()
    _, state = env.reset(jr.key(0), params)
    cases = [(W.ClipAction(env), gym.wrappers.ClipAction(Capture())),
             (W.RescaleAction(env, -1.0, 1.0), gym.wrappers.RescaleAction(Capture(), np.float32(-1.0), np.float32(1.0))),
             (W.RescaleAction(env, torch.tensor([0.0, -3.0]), torch.tensor([1.0, 5.0])),
              gym.wrappers.RescaleAction(Capture(), np.array([0.0, -3.0], np.float32), np.array([1.0, 5.0], np.float32)))]
    for w, g in cases:
        g.reset()
        for t in range(5):
            a = _actions(t, scale=4.0)
            g.step(a.numpy())
            target = torch.as_tensor(g.unwrapped.last, dtype=torch.float32)
            got = w.step(jr.key(t), state, a, params)
            want = env.step(jr.key(t), state, target, params)
            assert tree.allclose(got, want, rtol=1e-6, atol=1e-6)
    assert W.ClipAction(env).action_space().high.tolist() == [float("inf")] * 2
    assert W.RescaleAction(env).action_space() == spaces.Box(-1.0, 1.0, (2,))
    # RescaleAction alone maps out-of-range actions outside the env bounds; ClipAction outside it clips first
    both = W.ClipAction(W.RescaleAction(env))
    out = both.step(jr.key(1), state, torch.tensor([3.0, -3.0]), params)
    assert tree.allclose(out, env.step(jr.key(1), state, torch.tensor([2.0, -2.0]), params))


# ------------------------------------------------------------------ observation / reward transforms
def test_flatten_observation_matches_gymnasium_flatten():
    env, params = make("FrozenLake-v1")
    w = W.FlattenObservation(env)
    obs, state = w.reset(jr.key(0), params)
    g_space = env.observation_space().to_gymnasium()
    np.testing.assert_array_equal(obs.numpy(), gym.spaces.flatten(g_space, 0))
    assert w.observation_space(params).to_gymnasium() == gym.spaces.flatten_space(g_space)
    obs, state, _, _, _, info = w.step(jr.key(1), state, 1, params)
    assert obs.shape == (16,) and info["final_obs"].shape == (16,) and int(obs.sum()) == 1
    box = W.FlattenObservation(W.TransformObservation(Drift(), lambda x: x.reshape(2, 1),
                                                      spaces.Box(-float("inf"), float("inf"), (2, 1))))
    o, _ = box.reset(jr.key(0))
    assert o.shape == (2,) and box.observation_space().shape == (2,)


def test_transform_observation_and_reward():
    env = Drift()
    w = W.TransformReward(W.TransformObservation(env, lambda x: 2 * x), lambda r: torch.clamp(r, -5.0, 0.0))
    obs0, outs = _rollout(w, 20)
    raw0, raw = _rollout(env, 20)
    torch.testing.assert_close(obs0, 2 * raw0)
    for o, r in zip(outs, raw):
        torch.testing.assert_close(o[0], 2 * r[0])
        torch.testing.assert_close(o[5]["final_obs"], 2 * r[5]["final_obs"])
        torch.testing.assert_close(o[2], torch.clamp(r[2], -5.0, 0.0))


# ------------------------------------------------------------------ composition, vmap, compile
def _stack(env):
    return W.LogWrapper(W.NormalizeReward(W.NormalizeObservation(W.ClipAction(env)), gamma=0.95))


def test_composed_wrappers_vmap_equals_loop():
    env = _stack(Drift())
    n, T = 3, 12
    keys = jr.split(jr.key(0), n)
    obs, states = vmap_reset(env, keys)
    singles = [env.reset(keys[i]) for i in range(n)]
    for i in range(n):
        assert_match(singles[i][0], obs[i])
    single_states = [s for _, s in singles]
    ended = 0
    for t in range(T):
        ks = jr.split(jr.fold_in(jr.key(1), t), n)
        acts = _actions(t, n)
        out = vmap_step(env, ks, states, acts)
        states = out[1]
        for i in range(n):
            o = env.step(ks[i], single_states[i], acts[i])
            single_states[i] = o[1]
            assert_match(o, tree.index(out, i))  # element-wise dynamics and statistics: bit for bit
        ended += int(out[5]["returned_episode"].sum())
    assert ended > 0
    assert "x0" in out[5] and "final_obs" in out[5]


@pytest.mark.compile
def test_composed_wrappers_compiled_equal_eager():
    env = _stack(Drift())
    n = 4
    _, states = vmap_reset(env, jr.split(jr.key(0), n))
    compiled = funrl.envs.make_step_fn(env, compile=True)
    eager = funrl.envs.make_step_fn(env, compile=False)
    sc = se = states
    for t in range(8):
        with torch._dynamo.config.patch(error_on_recompile=t > 0):
            ks = jr.split(jr.fold_in(jr.key(1), t), n)
            oc, oe = compiled(ks, sc, _actions(t, n)), eager(ks, se, _actions(t, n))
            assert_match(oc, oe, exact=False)  # compiled vs eager: reassociation
            sc, se = oc[1], oe[1]


def test_attribute_forwarding_and_unwrapped():
    env, params = make("FrozenLake-v1")
    w = W.LogWrapper(W.FlattenObservation(env))
    assert w.P is env.P and w.unwrapped is env and w.name == "FrozenLake-v1"
    assert w.num_actions == 4 and "LogWrapper" not in repr(w) and "EpisodeStatistics(FlattenObservation(" in repr(w)
    assert int(w.default_params().max_episode_steps) == 100
    with pytest.raises(AttributeError):
        w.does_not_exist


# ------------------------------------------------------------------ errors
def test_wrapper_errors():
    frozen, params = make("FrozenLake-v1")
    drift = Drift()
    with pytest.raises(TypeError, match="env: expected a funrl.envs.Environment"):
        W.LogWrapper(object())
    with pytest.raises(TypeError, match="NormalizeObservation needs a Box"):
        W.NormalizeObservation(frozen)
    with pytest.raises(TypeError, match="ClipAction needs a Box action space"):
        W.ClipAction(frozen)
    with pytest.raises(ValueError, match="min_action < max_action"):
        W.RescaleAction(drift, 1.0, 1.0)
    with pytest.raises(ValueError, match="epsilon"):
        W.NormalizeObservation(drift, epsilon=0.0)
    with pytest.raises(ValueError, match="gamma.*\\[0, 1\\].*1.5"):
        W.NormalizeReward(drift, gamma=1.5)
    with pytest.raises(TypeError, match="fn: expected a callable"):
        W.TransformReward(drift, 3)
    w = W.LogWrapper(frozen)
    with pytest.raises(TypeError, match="state: expected an EpisodeStatisticsState"):
        w.step(jr.key(0), MDPState(torch.tensor(0), torch.tensor(0)), 0, params)
    with pytest.raises(NotImplementedError, match="autoreset=False"):
        w.step_env(jr.key(0), None, 0, params)
    with pytest.raises(ValueError, match=r"batch: expected shape \(B, 3\)"):
        W.running_mean_std_update(W.running_mean_std_init((3,)), torch.zeros(3))
    _, state = w.reset(jr.key(0), params)
    with pytest.raises(ValueError, match="action"):
        w.step(jr.key(0), state, 9, params)
