"""Tests for funrl.envs core API: spaces, registry, auto-reset/truncation semantics, validation, batching."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl import random as jr
from funrl import tree
from funrl.envs import Environment, make, make_step_fn, spaces, vmap_reset, vmap_step
from funrl.envs import core, registry
from funrl.tree import pytree_dataclass
from helpers import assert_match


# ----------------------------------------------------------------- a toy env
@pytree_dataclass
class ToyState:
    pos: torch.Tensor
    time: torch.Tensor


@pytree_dataclass
class ToyParams:
    goal: torch.Tensor
    max_episode_steps: torch.Tensor


class Toy(Environment):
    """pos starts in [0, 1); action 1 adds 1, action 0 adds 0; terminates at pos >= goal.

    step_env deliberately leaves ``time`` unchanged: the base class must count.
    """

    def default_params(self, dtype=torch.float32):
        return ToyParams(goal=torch.tensor(3.0, dtype=dtype), max_episode_steps=torch.tensor(10))

    def reset_env(self, key, params):
        pos = jr.uniform(key, (), params.goal.dtype)
        return pos.reshape(1), ToyState(pos=pos, time=torch.zeros((), dtype=torch.int64))

    def step_env(self, key, state, action, params):
        pos = state.pos + action.to(state.pos.dtype)
        return pos.reshape(1), ToyState(pos=pos, time=state.time), 10 * pos, pos >= params.goal, {"pos": pos}

    def observation_space(self, params):
        return spaces.Box(0.0, float("inf"), (1,), params.goal.dtype)

    def action_space(self, params=None):
        return spaces.Discrete(2)


def _keys(seed, n):
    return jr.split(jr.key(seed), n)


def test_auto_reset_same_step_semantics():
    env = Toy()
    p = env.default_params()
    k = _keys(0, 4)
    obs, s = env.reset(k[0], p)
    assert int(s.time) == 0 and 0.0 <= float(obs[0]) < 1.0
    start = float(s.pos)
    obs, s, r, term, trunc, info = env.step(k[1], s, torch.tensor(1), p)
    assert int(s.time) == 1 and not bool(term) and not bool(trunc)
    assert torch.equal(info["final_obs"], obs)  # not done: final_obs is obs
    obs, s, r, term, trunc, info = env.step(k[2], s, torch.tensor(1), p)
    assert int(s.time) == 2 and not bool(term)
    obs, s, r, term, trunc, info = env.step(k[3], s, torch.tensor(1), p)
    # the finished step: pos = start + 3 >= 3 -> terminated, reward 10 * pos
    assert bool(term) and not bool(trunc)
    assert float(info["final_obs"][0]) == pytest.approx(start + 3.0)
    assert float(r) == pytest.approx(10 * (start + 3.0))
    assert float(info["pos"]) == pytest.approx(start + 3.0)
    # ... but obs/state are a fresh reset drawn with reset_key(key)
    obs_re, s_re = env.reset(core.reset_key(k[3]), p)
    assert torch.equal(obs, obs_re) and tree.equal(s, s_re)
    assert int(s.time) == 0


def test_truncation_at_max_episode_steps_and_with_termination():
    env = Toy()
    p = ToyParams(goal=torch.tensor(3.0), max_episode_steps=torch.tensor(2))
    k = _keys(1, 3)
    _, s = env.reset(k[0], p)
    _, s, _, term, trunc, _ = env.step(k[1], s, torch.tensor(0), p)
    assert not bool(trunc) and int(s.time) == 1
    obs, s, _, term, trunc, info = env.step(k[2], s, torch.tensor(0), p)
    assert bool(trunc) and not bool(term) and int(s.time) == 0  # reset after truncation
    assert not torch.equal(obs, info["final_obs"])
    # terminated and truncated on the same step: both reported (gymnasium TimeLimit)
    p3 = ToyParams(goal=torch.tensor(3.0), max_episode_steps=torch.tensor(3))
    _, s = env.reset(k[0], p3)
    for i in range(3):
        _, s, _, term, trunc, _ = env.step(k[i], s, torch.tensor(1), p3)
    assert bool(term) and bool(trunc)


def test_autoreset_false_and_step_env_leave_state_alone():
    env = Toy()
    p = ToyParams(goal=torch.tensor(1.0), max_episode_steps=torch.tensor(1))
    k = _keys(2, 2)
    _, s = env.reset(k[0], p)
    obs, s2, r, term, trunc, info = env.step(k[1], s, torch.tensor(1), p, autoreset=False)
    assert bool(term) and bool(trunc)
    assert float(s2.pos) == pytest.approx(float(s.pos) + 1) and int(s2.time) == 1
    assert torch.equal(info["final_obs"], obs)
    obs_e, s_e, r_e, term_e, info_e = env.step_env(k[1], s, torch.tensor(1), p)
    assert torch.equal(obs_e, obs) and torch.equal(r_e, r) and set(info_e) == {"pos"}


def test_default_params_used_when_none():
    env, p = make("CartPole-v1")
    k = jr.key(3)
    a = env.reset(k)
    b = env.reset(k, p)
    assert tree.equal(a, b)
    sa = env.step(k, a[1], torch.tensor(0))
    sb = env.step(k, b[1], torch.tensor(0), p)
    assert tree.equal(sa, sb)


# ----------------------------------------------------------------- validation
def test_bad_actions_raise_clear_errors():
    env, p = make("CartPole-v1")
    k = jr.key(0)
    _, s = env.reset(k, p)
    with pytest.raises(TypeError, match="action.*integer.*float32"):
        env.step(k, s, torch.tensor(1.0), p)
    with pytest.raises(ValueError, match=r"action.*shape \(\).*\(1,\)"):
        env.step(k, s, torch.tensor([1]), p)
    with pytest.raises(ValueError, match=r"action.*\[0, 1\].*got 2"):
        env.step(k, s, torch.tensor(2), p)
    with pytest.raises(ValueError, match=r"action.*got -1"):
        env.step(k, s, -1, p)
    with pytest.raises(TypeError, match="action: expected a torch.Tensor"):
        env.step(k, s, "left", p)
    penv, pp = make("Pendulum-v1")
    _, ps = penv.reset(k, pp)
    with pytest.raises(ValueError, match=r"action.*shape \(1,\).*\(\)"):
        penv.step(k, ps, torch.tensor(0.5), pp)
    with pytest.raises(TypeError, match="action.*floating-point.*int64"):
        penv.step(k, ps, torch.tensor([1]), pp)
    with pytest.raises(TypeError, match="key"):
        env.step(torch.tensor([0.0, 1.0]), s, torch.tensor(0), p)
    with pytest.raises(ValueError, match="key"):
        env.reset(jr.split(k, 3), p)
    with pytest.raises(TypeError, match="state"):
        env.step(k, {"x": 1}, torch.tensor(0), p)
    with pytest.raises(ValueError, match="keys"):
        vmap_reset(env, jr.key(0), p)


def test_out_of_range_discrete_actions_are_clamped_under_vmap():
    env, p = make("CartPole-v1")
    keys = _keys(4, 4)
    _, s = vmap_reset(env, keys, p)
    wild = torch.tensor([5, -3, 1, 0])
    clamped = torch.tensor([1, 0, 1, 0])
    a = vmap_step(env, keys, s, wild, p)
    b = vmap_step(env, keys, s, clamped, p)
    assert tree.equal(a, b)


def test_python_int_action_accepted_in_eager():
    env, p = make("MountainCar-v0")
    k = jr.key(5)
    _, s = env.reset(k, p)
    assert tree.equal(env.step(k, s, 2, p), env.step(k, s, torch.tensor(2), p))


# ----------------------------------------------------------------- registry
def test_registry_lists_and_makes():
    ids = registry.list_envs()
    for i in ["CartPole-v0", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0",
              "Acrobot-v1", "FrozenLake-v1", "FrozenLake8x8-v1", "CliffWalking-v0", "Taxi-v3"]:
        assert i in ids
    # time limits and thresholds as gymnasium registers them
    for i in ["CartPole-v0", "CartPole-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Acrobot-v1"]:
        env, p = make(i)
        gspec = gymnasium.spec(i)
        assert int(p.max_episode_steps) == gspec.max_episode_steps
        assert registry.spec(i).reward_threshold == gspec.reward_threshold
        assert env.name == i
    assert registry.spec("FrozenLake8x8-v1").kwargs == {"map_name": "8x8", "is_slippery": True}
    assert registry.spec("FrozenLake-v1").max_episode_steps == 100


def test_make_dtype_and_overrides():
    env, p = make("CartPole-v1", dtype=torch.float64, length=0.7, max_episode_steps=50)
    assert p.length.dtype == torch.float64 and float(p.length) == 0.7
    assert p.max_episode_steps.dtype == torch.int64 and int(p.max_episode_steps) == 50
    obs, s = env.reset(jr.key(0), p)
    assert obs.dtype == torch.float64 and s.x.dtype == torch.float64 and s.time.dtype == torch.int64
    # constructor kwargs go to the constructor, the rest to params
    env2, p2 = make("CartPole-v1", sutton_barto_reward=True, gravity=9.81)
    assert env2.sutton_barto_reward and float(p2.gravity) == pytest.approx(9.81)
    _, s = env2.reset(jr.key(0), p2)
    _, _, r, *_ = env2.step(jr.key(0), s, torch.tensor(0), p2)
    assert float(r) == 0.0  # Sutton & Barto reward: 0 for a non-terminal step
    env3, _ = make("Acrobot-v1", book_or_nips="nips")
    assert env3.book_or_nips == "nips"
    # tensor overrides give batched params
    _, pb = make("CartPole-v1", length=torch.tensor([0.3, 0.6]))
    assert pb.length.shape == (2,)


def test_make_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"env_id.*'CartPol-v1'.*Did you mean 'CartPole-v1'"):
        make("CartPol-v1")
    with pytest.raises(ValueError, match="Known ids:.*Pendulum-v1"):
        make("Nothing-v9")
    with pytest.raises(ValueError, match=r"'lenght' \(did you mean 'length'\?\).*Valid names:.*masspole"):
        make("CartPole-v1", lenght=1.0)
    with pytest.raises(TypeError, match="gravity"):
        make("CartPole-v1", gravity="strong")
    with pytest.raises(ValueError, match="max_episode_steps"):
        make("CartPole-v1", max_episode_steps=10.5)
    with pytest.raises(TypeError, match="dtype"):
        make("CartPole-v1", dtype=torch.int32)
    with pytest.raises(ValueError, match="kinematics_integrator"):
        make("CartPole-v1", kinematics_integrator="rk4")


def test_import_is_lazy():
    code = (
        "import sys, funrl.envs as e; "
        "assert 'funrl.envs.cartpole' not in sys.modules; "
        "assert 'funrl.envs.tabular' not in sys.modules; "
        "e.make('CartPole-v1'); assert 'funrl.envs.cartpole' in sys.modules; "
        "assert 'funrl.envs.acrobot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import funrl.envs

    with pytest.raises(AttributeError, match="no_such_thing"):
        funrl.envs.no_such_thing  # noqa: B018


def test_num_actions_and_spaces_of_envs():
    assert make("CartPole-v1")[0].num_actions == 2
    assert make("Acrobot-v1")[0].num_actions == 3
    with pytest.raises(AttributeError, match="Discrete"):
        make("Pendulum-v1")[0].num_actions  # noqa: B018


# ----------------------------------------------------------------- spaces
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 7), start=st.integers(-3, 3))
def test_discrete_sample_vmap_and_contains(seed, n, start):
    sp = spaces.Discrete(n, start=start)
    keys = _keys(seed, 64)
    xs = torch.func.vmap(sp.sample)(keys)
    assert xs.dtype == torch.int64 and xs.shape == (64,)
    assert bool(((xs >= start) & (xs < start + n)).all())
    assert_match(xs, torch.stack([sp.sample(k) for k in keys]))
    assert sp.contains(xs[0]) and not sp.contains(torch.tensor(start + n)) and not sp.contains(torch.tensor(1.0))
    assert not sp.contains(torch.tensor([start]))
    g = sp.to_gymnasium()
    assert g == gymnasium.spaces.Discrete(n, start=start)
    assert spaces.from_gymnasium_space(g) == sp


def test_discrete_sample_is_uniform():
    xs = torch.func.vmap(spaces.Discrete(4).sample)(_keys(7, 40000))
    counts = torch.bincount(xs, minlength=4).double()
    expected = 10000.0
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 21.1  # chi-square, 3 dof, p = 1e-4


def test_box_sampling_bounded_half_and_unbounded():
    inf = float("inf")
    box = spaces.Box(torch.tensor([-1.0, 0.0, -inf, -inf]), torch.tensor([2.0, inf, 5.0, inf]))
    assert box.shape == (4,) and box.dtype == torch.float32
    xs = torch.func.vmap(box.sample)(_keys(8, 10000))
    assert xs.shape == (10000, 4) and xs.dtype == torch.float32
    assert bool((xs[:, 0] >= -1).all()) and bool((xs[:, 0] < 2).all())
    assert float(xs[:, 0].mean()) == pytest.approx(0.5, abs=0.04)
    assert bool((xs[:, 1] >= 0).all()) and float(xs[:, 1].mean()) == pytest.approx(1.0, abs=0.05)  # 0 + Exp(1)
    assert bool((xs[:, 2] <= 5).all()) and float(xs[:, 2].mean()) == pytest.approx(4.0, abs=0.05)  # 5 - Exp(1)
    assert float(xs[:, 3].mean()) == pytest.approx(0.0, abs=0.05) and float(xs[:, 3].std()) == pytest.approx(1, abs=0.05)
    assert box.contains(xs[0]) and not box.contains(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    assert not box.contains(torch.zeros(3)) and not box.contains(torch.zeros(4, dtype=torch.int64))


def test_box_gymnasium_round_trip_and_int_box():
    box = spaces.Box(-1.0, 1.0, (2, 3), torch.float64)
    g = box.to_gymnasium()
    assert g == gymnasium.spaces.Box(-1.0, 1.0, (2, 3), np.float64)
    assert spaces.from_gymnasium_space(g) == box
    ibox = spaces.Box(0, 4, (5,), torch.int64)
    xs = torch.func.vmap(ibox.sample)(_keys(9, 5000))
    assert xs.dtype == torch.int64 and int(xs.min()) == 0 and int(xs.max()) == 4
    assert ibox.contains(xs[0]) and not ibox.contains(xs[0].double())
    with pytest.raises(ValueError, match="low, high"):
        spaces.Box(torch.zeros(2), torch.ones(3), (2,))
    with pytest.raises(TypeError, match="dtype"):
        spaces.Box(0.0, 1.0, (2,), torch.bool)
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        spaces.Discrete(0)
    with pytest.raises(TypeError, match="space"):
        spaces.from_gymnasium_space(gymnasium.spaces.Tuple([gymnasium.spaces.Discrete(2)]))


def test_multidiscrete():
    md = spaces.MultiDiscrete([2, 3, 5])
    xs = torch.func.vmap(md.sample)(_keys(10, 3000))
    assert xs.shape == (3000, 3)
    assert torch.equal(xs.max(0).values, torch.tensor([1, 2, 4])) and int(xs.min()) == 0
    assert md.contains(torch.tensor([1, 2, 4])) and not md.contains(torch.tensor([2, 0, 0]))
    g = md.to_gymnasium()
    assert g == gymnasium.spaces.MultiDiscrete([2, 3, 5])
    assert spaces.from_gymnasium_space(g) == md
    with pytest.raises(ValueError, match="nvec"):
        spaces.MultiDiscrete([2, 0])


# ----------------------------------------------------------------- helpers
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**40),
    n=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    lo=st.floats(-10, 0),
    width=st.floats(1e-3, 10),
)
def test_fast_uniform_is_funrl_random_uniform_bit_for_bit(seed, n, dtype, lo, width):
    k = jr.key(seed)
    a = core.uniform(k, n, dtype, lo, lo + width)
    b = jr.uniform(k, (n,), dtype, lo, lo + width)
    assert a.dtype == dtype and torch.equal(a, b)
    keys = _keys(seed, 3)
    va = torch.func.vmap(lambda kk: core.uniform(kk, n, dtype, lo, lo + width))(keys)
    vb = torch.func.vmap(lambda kk: jr.uniform(kk, (n,), dtype, lo, lo + width))(keys)
    assert torch.equal(va, vb)


def test_reset_key_is_deterministic_and_distinct():
    keys = _keys(11, 100)
    rk = torch.func.vmap(core.reset_key)(keys)
    assert_match(rk, torch.stack([core.reset_key(k) for k in keys]))
    assert not bool((rk == keys).all(-1).any())
    both = torch.cat([keys, rk])
    assert torch.unique(both, dim=0).shape[0] == 200
    assert bool(((rk >= 0) & (rk < 2**32)).all())


def test_select_tree():
    a = ToyState(pos=torch.tensor(1.0), time=torch.tensor(3))
    b = ToyState(pos=torch.tensor(2.0), time=torch.tensor(0))
    assert tree.equal(core.select_tree(torch.tensor(True), a, b), a)
    assert tree.equal(core.select_tree(torch.tensor(False), a, b), b)


def test_vmap_reset_outputs_are_contiguous_and_match_loop():
    env, p = make("CartPole-v1")
    keys = _keys(12, 6)
    obs, s = vmap_reset(env, keys, p)
    assert all(x.is_contiguous() for x in tree.leaves(s))
    # also for N = 1, where contiguous() would keep vmap's stride (4,) / (0,) on the size-1 axis
    one = vmap_reset(env, keys[:1], p)
    assert all(x.stride()[-1] == 1 for x in tree.leaves(one))
    loop = tree.stack([env.reset(k, p) for k in keys])
    assert_match((obs, s), loop)  # element-wise reset: bit for bit


@pytest.mark.compile
def test_make_step_fn_compiled_equals_eager_with_autoreset_and_clamping():
    """One small compiled graph: CartPole step + auto-reset, funrl.jit vs eager, with out-of-range actions."""
    env, p = make("CartPole-v1", max_episode_steps=3)
    n = 4
    keys = _keys(13, n)
    _, s = vmap_reset(env, keys, p)
    step_c = make_step_fn(env, p, compile=True)
    step_e = make_step_fn(env, p, compile=False)
    # the compiled graph gets out-of-range actions [7, -2], eager their clamped values [1, 0]
    actions_c = [torch.tensor([1, 0, 1, 1]), torch.tensor([7, -2, 0, 1]), torch.tensor([0, 1, 1, 0])]
    actions_e = [torch.tensor([1, 0, 1, 1]), torch.tensor([1, 0, 0, 1]), torch.tensor([0, 1, 1, 0])]
    sc, se = s, s
    for t in range(3):
        ks = _keys(100 + t, n)
        oc = step_c(ks, sc, actions_c[t])
        oe = step_e(ks, se, actions_e[t])
        # compiled vs eager: floats up to reassociation; flags and times (int/bool) stay exact
        assert_match(oc, oe, exact=False)
        sc, se = oc[1], oe[1]
    # the third step hits the time limit: every env truncated and reset (time 0)
    assert bool(oc[4].all()) and torch.equal(oc[1].time, torch.zeros(n, dtype=torch.int64))


def test_box_repr_prints_the_shortest_numbers_that_read_back_in_its_dtype():
    import re

    import funrl

    env, params = funrl.envs.make("CartPole-v1")
    box = env.observation_space(params)
    text = repr(box)
    assert text.startswith("Box([-4.8, -inf, -0.41887903, -inf], [4.8, inf, 0.41887903, inf], (4,)")
    numbers = [float(t) for t in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", text)]
    assert numbers and all(torch.tensor(v, dtype=torch.float32) in box.high.abs() for v in map(abs, numbers))
    assert repr(funrl.envs.spaces.Box(-2.0, 2.0, (1,))) == "Box(-2.0, 2.0, (1,), torch.float32)"
    assert repr(funrl.envs.spaces.Box(0.1, 0.3, (1,), dtype=torch.float64)) == "Box(0.1, 0.3, (1,), torch.float64)"


def test_listing_table_equals_the_live_spaces():
    """`funrl envs` prints funrl.envs._listing (no torch import); it must equal every env's live spaces."""
    from funrl.envs._listing import SPACES

    assert sorted(SPACES) == registry.list_envs()
    for env_id, (obs, act) in SPACES.items():
        env, params = registry.make(env_id)
        # regenerate: {i: (repr(e.observation_space(p)), repr(e.action_space(p))) for each id}
        assert (repr(env.observation_space(params)), repr(env.action_space(params))) == (obs, act), env_id
