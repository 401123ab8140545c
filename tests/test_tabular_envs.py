"""Tests for funrl.envs.tabular: exact tables vs gymnasium, sampling statistics, vmap/compile, errors."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funrl
from funrl import random as jr
from funrl import tree
from funrl.envs import make, vmap_reset, vmap_step
from funrl.envs.tabular import CliffWalking, FiniteMDP, FrozenLake, MDPState, Taxi, random_mdp
from helpers import assert_match

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3  # FrozenLake
C_UP, C_RIGHT, C_DOWN, C_LEFT = 0, 1, 2, 3  # CliffWalking
SOUTH, NORTH, EAST, WEST, PICKUP, DROPOFF = range(6)  # Taxi


@pytest.fixture(scope="module")
def taxi():
    return Taxi()


# ------------------------------------------------------------------ helpers
def _gym_dense(P_dict):
    """Independent aggregation of gymnasium's env.unwrapped.P into dense numpy tables.

    Returns P (summed in list order), the set of rewards and of terminated flags per
    (s, a, s'), and the expected reward sum_k p_k r_k per (s, a).
    """
    S, A = len(P_dict), len(P_dict[0])
    P = np.zeros((S, A, S))
    rewards = {}
    dones = {}
    R_sa = np.zeros((S, A))
    for s in range(S):
        for a in range(A):
            for p, t, r, d in P_dict[s][a]:
                P[s, a, t] += p
                rewards.setdefault((s, a, t), set()).add(float(r))
                dones.setdefault((s, a, t), set()).add(bool(d))
                R_sa[s, a] += p * r
    return P, rewards, dones, R_sa


def _chi2_critical(df: int, z: float = 3.719) -> float:
    """Wilson-Hilferty upper quantile of chi-square(df); z=3.719 is the 1e-4 normal tail."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def _chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    keep = probs > 0
    n = counts.sum()
    assert counts[~keep].sum() == 0, "a zero-probability outcome was sampled"
    expected = n * probs[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


GYM_CASES = [
    ("FrozenLake-v1", {}, lambda: FrozenLake()),
    ("FrozenLake-v1", {"is_slippery": False}, lambda: FrozenLake(is_slippery=False)),
    ("FrozenLake-v1", {"success_rate": 0.8, "reward_schedule": (5, -2, -0.5)},
     lambda: FrozenLake(success_rate=0.8, reward_schedule=(5, -2, -0.5))),
    ("FrozenLake8x8-v1", {}, lambda: FrozenLake("8x8")),
    ("CliffWalking-v1", {}, lambda: CliffWalking()),
    ("CliffWalking-v1", {"is_slippery": True}, lambda: CliffWalking(is_slippery=True)),
    ("Taxi-v4", {}, lambda: Taxi()),
    ("Taxi-v4", {"is_rainy": True}, lambda: Taxi(is_rainy=True)),
    ("Taxi-v4", {"is_rainy": True, "rainy_probability": 0.5}, lambda: Taxi(is_rainy=True, rainy_probability=0.5)),
]


# ------------------------------------------------------------------ exact tables
@pytest.mark.parametrize("gym_id, kwargs, ctor", GYM_CASES)
def test_tables_equal_gymnasium(gym_id, kwargs, ctor):
    genv = gym.make(gym_id, **kwargs).unwrapped
    mdp = ctor()
    P, rewards, dones, R_sa = _gym_dense(genv.P)
    assert mdp.P.dtype == torch.float64
    np.testing.assert_array_equal(mdp.P.numpy(), P)  # bit-exact probabilities and next states
    np.testing.assert_array_equal(mdp.initial_distribution.numpy(), genv.initial_state_distrib)
    R = mdp.R.numpy()
    D = mdp.terminated.numpy()
    for (s, a, t), rs in rewards.items():
        assert D[s, a, t] == next(iter(dones[(s, a, t)]))
        if len(rs) == 1:
            assert R[s, a, t] == next(iter(rs))  # exact reward of the transition
    # entries gymnasium never lists are impossible and carry no reward/termination
    listed = np.zeros(P.shape, dtype=bool)
    for key in rewards:
        listed[key] = True
    assert not D[~listed].any() and (R[~listed] == 0).all() and (P[~listed] == 0).all()
    np.testing.assert_allclose(mdp.expected_reward.numpy(), R_sa, rtol=0, atol=1e-12)
    assert mdp.observation_space() .to_gymnasium() == genv.observation_space
    assert mdp.action_space().to_gymnasium() == genv.action_space


def test_cliffwalking_slippery_merges_conflicting_rewards():
    # from the start, 'right' slips up (-1 to 24), falls off the cliff (-100 back to 36)
    # or bumps into the bottom edge (-1, stays at 36): both last outcomes land on 36
    mdp = CliffWalking(is_slippery=True)
    assert mdp.P[36, C_RIGHT, 36] == pytest.approx(2 / 3, abs=1e-15)
    assert mdp.R[36, C_RIGHT, 36] == pytest.approx(-50.5, abs=1e-12)
    assert mdp.expected_reward[36, C_RIGHT] == pytest.approx((-1 - 100 - 1) / 3, abs=1e-12)


def test_from_transitions_builds_gymnasium_tables(taxi):
    genv = gym.make("Taxi-v4").unwrapped
    mdp = FiniteMDP.from_transitions(genv.P, genv.initial_state_distrib, max_episode_steps=200)
    assert torch.equal(mdp.P, taxi.P) and torch.equal(mdp.R, taxi.R) and torch.equal(mdp.terminated, taxi.terminated)
    assert torch.equal(mdp.initial_distribution, taxi.initial_distribution)


def test_hand_computed_entries():
    lake = FrozenLake()
    # state 14 (row 3, col 2), 'right' on a slippery lake: down stays on 14, right reaches the goal, up goes to 10
    assert lake.P[14, RIGHT, 15] == 1 / 3 and lake.R[14, RIGHT, 15] == 1.0 and bool(lake.terminated[14, RIGHT, 15])
    assert lake.expected_reward[14, RIGHT] == pytest.approx(1 / 3, abs=1e-15)
    assert lake.terminal_states.nonzero().flatten().tolist() == [5, 7, 11, 12, 15]
    assert Taxi.encode(*Taxi.decode(327)) == 327 and Taxi.decode(Taxi.encode(3, 1, 2, 0)) == (3, 1, 2, 0)
    t = Taxi()
    assert int((t.initial_distribution > 0).sum()) == 300 and int(t.terminal_states.sum()) == 100


@pytest.mark.parametrize(
    "env_id, gym_id, steps",
    [("FrozenLake-v1", "FrozenLake-v1", 100), ("FrozenLake8x8-v1", "FrozenLake8x8-v1", 200),
     ("Taxi-v3", "Taxi-v4", 200), ("CliffWalking-v0", "CliffWalking-v1", None)],
)
def test_registry_time_limits_match_gymnasium(env_id, gym_id, steps):
    env, params = make(env_id)
    assert gym.spec(gym_id).max_episode_steps == steps
    want = torch.iinfo(torch.int64).max if steps is None else steps
    assert int(params.max_episode_steps) == want
    assert params.P.dtype == torch.float32 and params.terminated.dtype == torch.bool


# ------------------------------------------------------------------ hand-checked trajectories
def _run(env, params, state, actions, seed=0):
    out = []
    for t, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jr.fold_in(jr.key(seed), t), state, a, params)
        out.append((int(obs), float(r), bool(term), bool(trunc), int(info["final_obs"]), int(state.time)))
    return out


def _start(s):
    return MDPState(s=torch.tensor(s), time=torch.tensor(0))


def test_frozenlake_hole_goal_and_autoreset():
    env, params = make("FrozenLake-v1", is_slippery=False)
    # 0 -down-> 4 -right-> 5 (hole): terminated, reward 0, auto-reset to the start 0
    steps = _run(env, params, _start(0), [DOWN, RIGHT])
    assert steps == [(4, 0.0, False, False, 4, 1), (0, 0.0, True, False, 5, 0)]
    # 0 r 1 r 2 d 6 d 10 d 14 r 15 (goal, reward 1)
    steps = _run(env, params, _start(0), [RIGHT, RIGHT, DOWN, DOWN, DOWN, RIGHT])
    assert [s[0] for s in steps] == [1, 2, 6, 10, 14, 0]
    assert [s[1] for s in steps] == [0, 0, 0, 0, 0, 1.0]
    assert [s[2] for s in steps] == [False] * 5 + [True] and steps[-1][4] == 15


def test_time_limit_truncates_and_resets():
    env, params = make("FrozenLake-v1", is_slippery=False, max_episode_steps=3)
    steps = _run(env, params, _start(0), [LEFT, LEFT, LEFT, LEFT])
    assert [(s[2], s[3], s[5]) for s in steps] == [(False, False, 1), (False, False, 2), (False, True, 0), (False, False, 1)]
    _, _, _, _, trunc, _ = env.step(jr.key(0), MDPState(torch.tensor(0), torch.tensor(2)), LEFT, params, autoreset=False)
    assert bool(trunc)


def test_cliffwalking_cliff_and_goal():
    env, params = make("CliffWalking-v0")
    steps = _run(env, params, _start(36), [C_RIGHT])
    assert steps == [(36, -100.0, False, False, 36, 1)]  # back to start, episode goes on
    steps = _run(env, params, _start(36), [C_UP] + [C_RIGHT] * 11 + [C_DOWN])
    assert sum(s[1] for s in steps) == -13 and steps[-1][2] and steps[-1][4] == 47
    assert not any(s[2] for s in steps[:-1])


def test_taxi_pickup_drive_dropoff(taxi):
    params = taxi.default_params()
    s0 = Taxi.encode(0, 0, 0, 1)  # taxi at R, passenger at R, destination G
    actions = [DROPOFF, PICKUP, PICKUP, SOUTH, SOUTH, EAST, EAST, EAST, EAST, NORTH, NORTH, DROPOFF]
    steps = _run(taxi, params, _start(s0), actions)
    rewards = [s[1] for s in steps]
    # illegal dropoff, pickup, illegal pickup, 8 moves around the wall, delivery
    assert rewards == [-10, -1, -10] + [-1] * 8 + [20]
    assert [s[2] for s in steps] == [False] * 11 + [True]
    assert steps[-1][4] == Taxi.encode(0, 4, 1, 1)
    assert Taxi.decode(steps[1][0]) == (0, 0, 4, 1)
    # east from (0, 1) is blocked by the wall
    (obs, *_), = _run(taxi, params, _start(Taxi.encode(0, 1, 4, 1)), [EAST])
    assert Taxi.decode(obs) == (0, 1, 4, 1)


# ------------------------------------------------------------------ sampling statistics
def test_next_state_frequencies_match_P():
    mdp = random_mdp(jr.key(3), 6, 3, branching=4)
    params = mdp.default_params(torch.float32)
    S, A, n = 6, 3, 1500
    s = torch.arange(S).repeat_interleave(A * n)
    a = torch.arange(A).repeat_interleave(n).repeat(S)
    states = MDPState(s=s, time=torch.zeros_like(s))
    keys = jr.split(jr.key(11), s.numel())
    obs, _, r, *_ = vmap_step(mdp, keys, states, a, params, autoreset=False)
    counts = torch.zeros(S * A, S, dtype=torch.int64).index_put((s * A + a, obs), torch.ones_like(obs), accumulate=True)
    stat, df = 0.0, 0
    for i in range(S * A):
        x, k = _chi2(counts[i].numpy(), mdp.P.reshape(S * A, S)[i].numpy())
        stat, df = stat + x, df + k
    assert stat < _chi2_critical(df)
    # rewards are R[s, a] whatever the next state
    assert torch.equal(r, params.R[s, a, obs])


def test_initial_state_frequencies_match_gymnasium(taxi):
    keys = jr.split(jr.key(5), 15000)
    obs, states = vmap_reset(taxi, keys, taxi.default_params())
    assert torch.equal(obs, states.s) and bool((states.time == 0).all())
    counts = torch.bincount(obs, minlength=500).numpy()
    stat, df = _chi2(counts, gym.make("Taxi-v4").unwrapped.initial_state_distrib)
    assert df == 299 and stat < _chi2_critical(df)


def test_slippery_frozenlake_frequencies():
    env, params = make("FrozenLake-v1")
    n = 6000
    keys = jr.split(jr.key(2), n)
    states = MDPState(s=torch.full((n,), 6), time=torch.zeros(n, dtype=torch.int64))
    obs, *_ = vmap_step(env, keys, states, torch.full((n,), UP), params, autoreset=False)
    counts = torch.bincount(obs, minlength=16).numpy()
    # from 6 (row 1, col 2) 'up' slips left to 5 (hole), goes up to 2, slips right to 7 (hole)
    assert set(np.flatnonzero(counts)) == {2, 5, 7}
    stat, df = _chi2(counts, env.P[6, UP].numpy())
    assert stat < _chi2_critical(df)


def test_absorbing_tables_values_match_monte_carlo():
    # exact undiscounted value of the uniform random policy (a linear solve over the
    # non-terminal states) against the mean return of simulated episodes
    mdp = random_mdp(jr.key(4), 8, 3, branching=4, num_terminal=3)
    params = mdp.default_params(torch.float64)
    P, R = mdp.absorbing_tables()
    live = (~mdp.terminal_states).numpy()
    P_pi, r_pi = P.numpy().mean(1), R.numpy().mean(1)
    v = np.linalg.solve(np.eye(live.sum()) - P_pi[np.ix_(live, live)], r_pi[live])
    v_start = float(mdp.initial_distribution.numpy()[live] @ v)
    n, T = 1500, 30
    wrapped = funrl.envs.wrappers.LogWrapper(mdp)
    _, states = vmap_reset(wrapped, jr.split(jr.key(0), n), params)
    first = torch.full((n,), float("nan"), dtype=torch.float64)
    for t in range(T):
        acts = jr.randint(jr.fold_in(jr.key(1), t), (n,), 0, 3)
        _, states, _, _, _, info = vmap_step(wrapped, jr.split(jr.fold_in(jr.key(2), t), n), states, acts, params)
        first = torch.where(info["returned_episode"] & first.isnan(), info["returned_episode_returns"], first)
    done = ~first.isnan()
    assert int(done.sum()) > 0.99 * n
    se = float(first[done].std()) / float(done.sum()) ** 0.5
    assert abs(float(first[done].mean()) - v_start) < 4 * se, (float(first[done].mean()), v_start, se)
    # FrozenLake's holes and goal already are absorbing; CliffWalking's goal and Taxi's delivered
    # states become so (both terminate exactly on entering a terminal state)
    lake = FrozenLake()
    assert torch.equal(lake.absorbing_tables()[0], lake.P)
    P_cliff, R_cliff = CliffWalking().absorbing_tables()
    assert float(P_cliff[47, :, 47].min()) == 1.0 and float(R_cliff[47].abs().sum()) == 0.0
    bad = FiniteMDP(torch.full((2, 1, 2), 0.5), torch.zeros(2, 1), terminal_states=[1],
                    terminated=torch.zeros(2, 1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="absorbing_tables"):
        bad.absorbing_tables()


# ------------------------------------------------------------------ vmap / batched params / compile
def test_vmap_equals_loop(taxi):
    params = taxi.default_params()
    n = 6
    keys = jr.split(jr.key(0), n)
    obs, states = vmap_reset(taxi, keys, params)
    actions = jr.randint(jr.key(1), (n,), 0, 6)
    step_keys = jr.split(jr.key(2), n)
    out = vmap_step(taxi, step_keys, states, actions, params)
    for i in range(n):
        o_i, st_i = taxi.reset(keys[i], params)
        assert_match(o_i, obs[i])
        single = taxi.step(step_keys[i], st_i, actions[i], params)
        assert_match(single, tree.index(out, i))


def test_batched_params_step_different_mdps():
    mdps = [random_mdp(jr.key(i), 5, 2, branching=2, max_episode_steps=4) for i in range(3)]
    params = tree.stack([m.default_params(torch.float64) for m in mdps])
    keys = jr.split(jr.key(9), 3)
    obs, states = vmap_reset(mdps[0], keys, params, batched_params=True)
    acts = torch.tensor([0, 1, 1])
    out = vmap_step(mdps[0], keys, states, acts, params, batched_params=True)
    for i, m in enumerate(mdps):
        o, s = m.reset(keys[i], m.default_params(torch.float64))
        assert_match(o, obs[i])
        assert_match(m.step(keys[i], s, acts[i], m.default_params(torch.float64)), tree.index(out, i))


@pytest.mark.compile
def test_compiled_step_equals_eager():
    env, params = make("FrozenLake-v1")
    n = 8
    compiled = funrl.envs.make_step_fn(env, params, compile=True)
    eager = funrl.envs.make_step_fn(env, params, compile=False)
    _, states_c = vmap_reset(env, jr.split(jr.key(0), n), params)
    states_e = states_c
    # vmap_reset's output and the step's own output must hit one compiled graph: after the
    # first call (which may count as a recompile of core's shared step code), none may recompile
    for t in range(12):
        with torch._dynamo.config.patch(error_on_recompile=t > 0):
            keys = jr.split(jr.fold_in(jr.key(1), t), n)
            actions = jr.randint(jr.fold_in(jr.key(2), t), (n,), 0, 4)
            out_c = compiled(keys, states_c, actions)
            out_e = eager(keys, states_e, actions)
            assert_match(out_c, out_e)  # table look-ups and integer draws: bit for bit even compiled
            states_c, states_e = out_c[1], out_e[1]


# ------------------------------------------------------------------ random_mdp
@settings(max_examples=25, deadline=None)
@given(
    S=st.integers(1, 10),
    A=st.integers(1, 4),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
    scale=st.floats(0.0, 5.0),
)
def test_random_mdp_is_row_stochastic(S, A, frac, seed, scale):
    b = 1 + int(frac * (S - 1))
    m = random_mdp(jr.key(seed), S, A, reward_scale=scale, branching=b, num_terminal=S // 3)
    assert m.P.shape == (S, A, S) and m.R.shape == (S, A, S) and m.expected_reward.shape == (S, A)
    assert bool((m.P >= 0).all())
    torch.testing.assert_close(m.P.sum(-1), torch.ones(S, A, dtype=torch.float64), rtol=0, atol=1e-12)
    assert bool(((m.P > 0).sum(-1) == b).all())
    assert int(m.terminal_states.sum()) == S // 3
    assert float(m.initial_distribution[m.terminal_states].sum()) == 0.0
    m2 = random_mdp(jr.key(seed), S, A, reward_scale=scale, branching=b, num_terminal=S // 3)
    assert torch.equal(m.P, m2.P) and torch.equal(m.R, m2.R)  # pure function of the key


def test_float32_tables_accepted_within_float32_tolerance():
    # float32 rows of 1/3 sum to 1 only within float32 rounding
    P = torch.full((3, 2, 3), 1 / 3, dtype=torch.float32)
    init = torch.full((3,), 1 / 3, dtype=torch.float32)
    m = FiniteMDP(P, torch.zeros(3, 2), init)
    assert m.P.dtype == torch.float64 and torch.equal(m.P, P.double())
    obs, state = m.reset(jr.key(0))
    assert 0 <= int(obs) < 3 and int(state.time) == 0


def test_random_mdp_rewards_scale_and_keys_differ():
    a = random_mdp(jr.key(0), 30, 4, reward_scale=2.0)
    b = random_mdp(jr.key(1), 30, 4, reward_scale=2.0)
    assert not torch.equal(a.P, b.P)
    r = a.expected_reward
    assert abs(float(r.mean())) < 0.6 and 1.5 < float(r.std()) < 2.5  # 120 draws of N(0, 4)


# ------------------------------------------------------------------ errors
def _P(S=2, A=1):
    return torch.full((S, A, S), 1.0 / S)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"P": torch.tensor([[[0.5, 0.4]], [[1.0, 0.0]]]), "R": torch.zeros(2, 1)}, ValueError, ["P", "sum", "0.9"]),
        ({"P": torch.tensor([[[1.5, -0.5]], [[1.0, 0.0]]]), "R": torch.zeros(2, 1)}, ValueError, ["P", "non-negative"]),
        ({"P": torch.ones(2, 2), "R": torch.zeros(2, 1)}, ValueError, ["P", "(S, A, S)"]),
        ({"P": torch.full((2, 1, 3), 1 / 3), "R": torch.zeros(2, 1)}, ValueError, ["P", "(2, 1, 3)"]),
        ({"P": _P(), "R": torch.zeros(3, 1)}, ValueError, ["R", "(2, 1)"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "initial_distribution": torch.ones(2)}, ValueError, ["initial_distribution", "sum"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "initial_distribution": torch.ones(3) / 3}, ValueError, ["initial_distribution", "(2,)"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "terminal_states": [2]}, ValueError, ["terminal_states", "[0, 1]"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "terminal_states": [0, 1]}, ValueError, ["initial_distribution", "terminal"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "terminated": torch.zeros(2, 1, 2)}, TypeError, ["terminated", "bool"]),
        ({"P": _P(), "R": torch.zeros(2, 1), "max_episode_steps": 0}, ValueError, ["max_episode_steps"]),
        ({"P": torch.ones(2, 1, 2, dtype=torch.bool), "R": torch.zeros(2, 1)}, TypeError, ["P", "bool"]),
        ({"P": _P(), "R": torch.tensor([[float("nan")], [0.0]])}, ValueError, ["R", "finite"]),
    ],
)
def test_finite_mdp_bad_input(kwargs, exc, words):
    with pytest.raises(exc) as info:
        FiniteMDP(**kwargs)
    for w in words:
        assert w in str(info.value)


def test_bad_actions_and_constructor_args(taxi):
    params = taxi.default_params()
    _, state = taxi.reset(jr.key(0), params)
    with pytest.raises(ValueError, match=r"action: expected an int in \[0, 5\].*got 6"):
        taxi.step(jr.key(1), state, torch.tensor(6), params)
    with pytest.raises(TypeError, match="action"):
        taxi.step(jr.key(1), state, torch.tensor(1.0), params)
    with pytest.raises(ValueError, match="map_name.*'4x4', '8x8'.*'5x5'"):
        FrozenLake("5x5")
    with pytest.raises(ValueError, match="desc"):
        FrozenLake(desc=["SFX", "FFG"])
    with pytest.raises(ValueError, match="branching.*num_states=4.*got 5"):
        random_mdp(jr.key(0), 4, 2, branching=5)
    with pytest.raises(ValueError, match="num_states"):
        random_mdp(jr.key(0), 0, 2)
    with pytest.raises(TypeError, match="key"):
        random_mdp(torch.zeros(2), 3, 2)
    bad = [[[(0.5, 0, 0.0, False), (0.5, 0, 0.0, True)]]]
    with pytest.raises(ValueError, match="disagree on 'terminated'"):
        FiniteMDP.from_transitions(bad, [1.0])


def test_out_of_range_action_is_clamped_under_vmap():
    env, params = make("FrozenLake-v1", is_slippery=False)
    states = MDPState(s=torch.tensor([0, 0]), time=torch.zeros(2, dtype=torch.int64))
    obs, *_ = vmap_step(env, jr.split(jr.key(0), 2), states, torch.tensor([7, -3]), params)
    # 7 -> 3 (up: stays at 0), -3 -> 0 (left: stays at 0)
    assert obs.tolist() == [0, 0]
