"""Tests for funrl.envs.gymnasium: to_gymnasium (funrl -> gymnasium VectorEnv) and from_gymnasium."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from funrl import random as jr
from funrl.envs import make, vmap_reset, vmap_step
from funrl.envs import wrappers as W
from funrl.envs.gymnasium import FunrlVectorEnv, GymnasiumVectorEnv, from_gymnasium, to_gymnasium, to_gymnasium_env


# ------------------------------------------------------------------ funrl -> gymnasium
def test_to_gymnasium_spaces_and_metadata():
    env, params = make("Taxi-v3")
    v = to_gymnasium(env, params, num_envs=3, seed=0)
    assert isinstance(v, gym.vector.VectorEnv) and isinstance(v, FunrlVectorEnv)
    assert v.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    genv = gym.make("Taxi-v4")
    assert v.single_observation_space == genv.observation_space
    assert v.single_action_space == genv.action_space
    assert v.observation_space == gym.vector.utils.batch_space(genv.observation_space, 3)
    assert v.action_space == gym.spaces.MultiDiscrete([6, 6, 6])
    obs, infos = v.reset(seed=1)
    assert obs in v.observation_space and infos == {}
    v.close()
    assert v.closed


def test_to_gymnasium_equals_funrl_with_the_same_keys():
    env, params = make("FrozenLake-v1")
    n, seed = 4, 123
    v = to_gymnasium(env, params, num_envs=n)
    obs, _ = v.reset(seed=seed)
    # the documented key schedule: split(key, n + 1); the first continues the stream
    ks = jr.split(jr.key(seed), n + 1)
    key, want_obs = ks[0], None
    want_obs, states = vmap_reset(env, ks[1:], params)
    np.testing.assert_array_equal(obs, want_obs.numpy())
    v.action_space.seed(0)
    ended = 0
    for t in range(30):
        actions = v.action_space.sample()
        obs, rew, term, trunc, infos = v.step(actions)
        ks = jr.split(key, n + 1)
        key = ks[0]
        w_obs, states, w_rew, w_term, w_trunc, w_info = vmap_step(env, ks[1:], states, torch.as_tensor(actions), params)
        np.testing.assert_array_equal(obs, w_obs.numpy())
        np.testing.assert_array_equal(rew, w_rew.numpy().astype(np.float64))
        np.testing.assert_array_equal(term, w_term.numpy())
        np.testing.assert_array_equal(trunc, w_trunc.numpy())
        assert obs in v.observation_space and rew.dtype == np.float64 and term.dtype == np.bool_
        done = term | trunc
        if done.any():
            ended += int(done.sum())
            np.testing.assert_array_equal(infos["_final_obs"], done)
            np.testing.assert_array_equal(infos["_final_info"], done)
            for i in range(n):
                if done[i]:
                    assert infos["final_obs"][i] == int(w_info["final_obs"][i])
                    assert infos["final_obs"][i] in v.single_observation_space
                else:
                    assert infos["final_obs"][i] is None
        else:
            assert "final_obs" not in infos
    assert ended > 0


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_to_gymnasium_box_envs(env_id):
    env, params = make(env_id)
    n = 3
    v = to_gymnasium(env, params, num_envs=n, seed=0)
    g = gym.make(env_id)
    assert v.single_observation_space == g.observation_space and v.single_action_space == g.action_space
    obs, _ = v.reset()
    assert obs.dtype == np.float32 and obs in v.observation_space
    v.action_space.seed(0)
    ended = 0
    for _ in range(40):
        actions = v.action_space.sample().astype(np.float64 if env_id == "Pendulum-v1" else np.int32)
        obs, rew, term, trunc, infos = v.step(actions)
        assert obs.shape == (n, *g.observation_space.shape) and obs in v.observation_space
        if (term | trunc).any():
            ended += 1
            for i in np.flatnonzero(term | trunc):
                assert infos["final_obs"][i].shape == g.observation_space.shape
    assert env_id == "Pendulum-v1" or ended > 0
    f = from_gymnasium(v)
    assert f.single_action_space.shape == g.action_space.shape


def test_to_gymnasium_episode_stats_match_gymnasium_record_episode_statistics():
    env, params = make("FrozenLake-v1")
    n = 5
    v = gym.wrappers.vector.RecordEpisodeStatistics(to_gymnasium(W.LogWrapper(env), params, num_envs=n))
    v.reset(seed=7)
    v.action_space.seed(1)
    seen = 0
    returns = np.zeros(n)
    for _ in range(60):
        _, rew, term, trunc, infos = v.step(v.action_space.sample())
        returns += rew
        done = term | trunc
        if done.any():
            ours = infos["final_info"]
            np.testing.assert_array_equal(infos["_episode"], done)
            np.testing.assert_array_equal(ours["_returned_episode_returns"], done)
            np.testing.assert_allclose(ours["returned_episode_returns"][done], infos["episode"]["r"][done])
            np.testing.assert_array_equal(ours["returned_episode_lengths"][done], infos["episode"]["l"][done])
            np.testing.assert_allclose(ours["returned_episode_returns"][done], returns[done])  # hand sums
            returns[done] = 0
            seen += int(done.sum())
        # infos of envs that go on are reported at the top level with masks
        np.testing.assert_array_equal(infos["_returned_episode"], ~done)
    assert seen >= 5


def test_to_gymnasium_seeding_reset_mask_and_errors():
    env, params = make("Taxi-v3")
    a, b = to_gymnasium(env, params, 3, seed=5), to_gymnasium(env, params, 3, seed=5)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])  # constructor seed
    acts = np.array([0, 1, 2])
    np.testing.assert_array_equal(a.step(acts)[0], b.step(acts)[0])
    obs, _ = a.reset(seed=[1, 2, 3])
    keys = torch.stack([jr.key(s) for s in (1, 2, 3)])
    np.testing.assert_array_equal(obs, vmap_reset(env, keys, params)[0].numpy())
    before = a.step(acts)[0]
    mask = np.array([False, True, False])
    after, _ = a.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(after[~mask], before[~mask])
    with pytest.raises(ValueError, match=r"actions: expected shape \(3,\)"):
        a.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="reset_mask"):
        a.reset(options={"reset_mask": np.ones(2, dtype=bool)})
    with pytest.raises(ValueError, match="options: unknown keys"):
        a.reset(options={"foo": 1})
    with pytest.raises(ValueError, match="num_envs"):
        to_gymnasium(env, params, 0)
    with pytest.raises(TypeError, match="env: expected a funrl.envs.Environment"):
        to_gymnasium(gym.make("Taxi-v4"))
    with pytest.raises(RuntimeError, match="reset"):
        to_gymnasium(env, params, 2).step(np.zeros(2, dtype=np.int64))


# ------------------------------------------------------------------ gymnasium -> funrl
def _cartpole_reference(seed, n, actions):
    """Plain gymnasium CartPole envs, stepped by hand with reset on done (same-step semantics)."""
    envs = [gym.make("CartPole-v1") for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    out = []
    for a in actions:
        rows = []
        for i, e in enumerate(envs):
            o, r, te, tr, _ = e.step(int(a[i]))
            final = o
            if te or tr:
                o, _ = e.reset()
            rows.append((o, r, te, tr, final))
        out.append(rows)
    return np.stack(obs), out


@pytest.mark.parametrize(
    "mode, kwargs",
    [("sync", {}), ("async", {}), ("sync", {"autoreset_mode": AutoresetMode.SAME_STEP})],
)
def test_from_gymnasium_gives_same_step_semantics(mode, kwargs):
    n, T, seed = 4, 60, 3
    vec = gym.make_vec("CartPole-v1", n, vectorization_mode=mode, vector_kwargs=kwargs)
    f = from_gymnasium(vec)
    assert isinstance(f, GymnasiumVectorEnv)
    assert f.autoreset_mode == kwargs.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    actions = [np.array([(t // 5 + i) % 2 for i in range(n)]) for t in range(T)]  # long pushes end episodes
    ref_obs0, ref = _cartpole_reference(seed, n, actions)
    obs = f.reset(seed=seed)
    assert obs.dtype == torch.float32 and obs.shape == (n, 4)
    np.testing.assert_allclose(obs.numpy(), ref_obs0, rtol=0, atol=0)
    ended = 0
    for t in range(T):
        obs, rew, term, trunc, info = f.step(torch.as_tensor(actions[t]))
        for i in range(n):
            o, r, te, tr, final = ref[t][i]
            assert bool(term[i]) == te and bool(trunc[i]) == tr and float(rew[i]) == r == 1.0
            np.testing.assert_array_equal(info["final_obs"][i].numpy(), final)  # the done step's obs
            np.testing.assert_array_equal(obs[i].numpy(), o)  # already the next episode's first obs
            ended += te
    assert ended >= n
    f.close()


def test_from_gymnasium_rejects_next_step_env_without_reset_mask():
    vec = gym.make_vec("CartPole-v1", 2)  # vector_entry_point: CartPoleVectorEnv, NEXT_STEP, no reset_mask
    with pytest.raises(TypeError, match="reset_mask.*vectorization_mode='sync'"):
        from_gymnasium(vec)
    vec.close()
    with pytest.raises(TypeError, match="vector_env: expected a gymnasium.vector.VectorEnv"):
        from_gymnasium(gym.make("CartPole-v1"))
    f = from_gymnasium(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"))
    with pytest.raises(RuntimeError, match="reset"):
        f.step(torch.zeros(2, dtype=torch.int64))
    f.reset(seed=0)
    with pytest.raises(ValueError, match="actions: expected a leading axis of 2"):
        f.step(torch.zeros(3, dtype=torch.int64))
    f.close()


def test_round_trip_funrl_through_gymnasium_and_back():
    env, params = make("FrozenLake-v1")
    v = to_gymnasium(env, params, num_envs=3, seed=0)
    f = from_gymnasium(v)
    assert f.autoreset_mode == AutoresetMode.SAME_STEP
    assert f.single_observation_space.n == 16 and f.single_action_space.n == 4
    obs = f.reset(seed=0)
    assert obs.dtype == torch.int64
    for t in range(20):
        obs, rew, term, trunc, info = f.step(jr.randint(jr.key(t), (3,), 0, 4))
        keep = ~(term | trunc)
        assert torch.equal(info["final_obs"][keep], obs[keep])


# ------------------------------------------------------------------ next-step auto-reset
def _gym_cartpole_vec(n, max_steps):
    """gymnasium's own SyncVectorEnv (NEXT_STEP, its default) of CartPole-v1 with a time limit."""
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=max_steps) for _ in range(n)])


def _sync_states(ref, obs, which):
    """Put our float64 CartPole states (= observations) into gymnasium's sub-envs ``which``."""
    for i in np.flatnonzero(which):
        ref.envs[i].unwrapped.state = np.array(obs[i], dtype=np.float64)


def test_next_step_autoreset_matches_gymnasium_sync_vector_env_step_for_step():
    n, T, max_steps = 4, 90, 25
    env, params = make("CartPole-v1", dtype=torch.float64, max_episode_steps=max_steps)
    ours = to_gymnasium(env, params, num_envs=n, autoreset_mode=AutoresetMode.NEXT_STEP)
    ref = _gym_cartpole_vec(n, max_steps)
    assert ours.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = ours.reset(seed=0)
    ref.reset(seed=0)
    _sync_states(ref, obs, np.ones(n, dtype=bool))  # reset draws differ: start from our states
    counts = {"term": 0, "trunc": 0, "reset": 0}
    prev_done = np.zeros(n, dtype=bool)
    for t in range(T):
        actions = np.array([(t // 4 + i) % 2 for i in range(n)])  # long pushes end some episodes early
        o, r, te, tr, info = ours.step(actions)
        g_o, g_r, g_te, g_tr, g_info = ref.step(actions)
        np.testing.assert_array_equal(te, g_te)
        np.testing.assert_array_equal(tr, g_tr)
        np.testing.assert_array_equal(r, g_r)
        assert r.dtype == g_r.dtype == np.float64 and te.dtype == g_te.dtype == np.bool_
        assert set(info) == set(g_info)
        # the step after an episode ends: reward 0, flags False (CartPole pays 1 on every real step)
        np.testing.assert_array_equal(r == 0, prev_done)
        assert not (te | tr)[prev_done].any()
        # stepped envs: the step's own observation (also on the step that ends an episode)
        np.testing.assert_allclose(o[~prev_done], g_o[~prev_done], rtol=1e-6, atol=1e-7)
        _sync_states(ref, o, prev_done)  # the new episodes start from our reset states
        counts["term"] += int(te.sum())
        counts["trunc"] += int(tr.sum())
        counts["reset"] += int(prev_done.sum())
        assert o in ours.observation_space
        prev_done = te | tr
    assert counts["term"] >= n and counts["trunc"] >= 1 and counts["reset"] >= n


def test_next_step_and_same_step_report_the_same_transitions():
    """NEXT_STEP = SAME_STEP's transitions with each reset delivered one step late (FrozenLake, same keys)."""
    env, params = make("FrozenLake-v1")
    n, T = 3, 40
    nxt = to_gymnasium(env, params, num_envs=n, autoreset_mode="NextStep")
    obs, _ = nxt.reset(seed=4)
    ks = jr.split(jr.key(4), n + 1)
    key = ks[0]
    w_obs, states = vmap_reset(env, ks[1:], params)
    np.testing.assert_array_equal(obs, w_obs.numpy())
    pending = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(0)
    ended = 0
    for t in range(T):
        actions = rng.integers(0, 4, n)
        o, r, te, tr, _ = nxt.step(actions)
        ks = jr.split(key, n + 1)
        key = ks[0]
        s_obs, s_states, s_rew, s_te, s_tr, s_info = vmap_step(env, ks[1:], states, torch.as_tensor(actions), params)
        # envs waiting for their reset: keep the reset drawn earlier, report reward 0
        np.testing.assert_array_equal(o[pending], w_obs.numpy()[pending])
        assert (r[pending] == 0).all() and not te[pending].any() and not tr[pending].any()
        go = ~pending
        np.testing.assert_array_equal(o[go], s_info["final_obs"].numpy()[go])
        np.testing.assert_array_equal(r[go], s_rew.numpy()[go])
        np.testing.assert_array_equal(te[go], s_te.numpy()[go])
        np.testing.assert_array_equal(tr[go], s_tr.numpy()[go])
        m = torch.as_tensor(pending)
        states = tree_where(m, states, s_states)
        w_obs = torch.where(m.reshape(-1), w_obs, s_obs)
        pending = te | tr
        ended += int(pending.sum())
    assert ended >= 3


def tree_where(mask, a, b):
    from funrl import tree

    return tree.map(lambda x, y: torch.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)


def test_gymnasium_vector_normalize_observation_accepts_next_step_only():
    env, params = make("CartPole-v1")
    with pytest.raises(ValueError, match="NEXT_STEP"):
        gym.wrappers.vector.NormalizeObservation(to_gymnasium(env, params, num_envs=2))
    n = 4
    raw = to_gymnasium(env, params, num_envs=n, seed=3, autoreset_mode=AutoresetMode.NEXT_STEP)
    norm = gym.wrappers.vector.NormalizeObservation(
        to_gymnasium(env, params, num_envs=n, seed=3, autoreset_mode=AutoresetMode.NEXT_STEP)
    )
    seen = [raw.reset()[0]]
    z, _ = norm.reset()
    for t in range(60):
        a = np.array([(t // 6 + i) % 2 for i in range(n)])
        o, *_ = raw.step(a)
        z, *_ = norm.step(a)
        seen.append(o)
    seen = np.concatenate(seen).astype(np.float64)
    # the wrapper's running statistics are those of exactly our observation stream (1e-4 prior count)
    np.testing.assert_allclose(norm.obs_rms.mean, seen.mean(0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(norm.obs_rms.var, seen.var(0), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(z, (o - norm.obs_rms.mean) / np.sqrt(norm.obs_rms.var + 1e-8), rtol=1e-4, atol=1e-5)
    assert np.abs(z - o).max() > 0.1  # the wrapper did transform


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Taxi-v3"])
def test_vector_env_api_types(env_id, mode):
    """gymnasium 1.4 has no vector-env checker: spaces, signatures and dtypes checked by hand."""
    import inspect

    import gymnasium.utils.env_checker as checker

    assert not any("vector" in name.lower() for name in dir(checker))
    env, params = make(env_id)
    n = 3
    v = to_gymnasium(env, params, num_envs=n, seed=0, autoreset_mode=mode)
    sig = inspect.signature(v.reset)
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == [
        ("seed", inspect.Parameter.KEYWORD_ONLY, None),
        ("options", inspect.Parameter.KEYWORD_ONLY, None),
    ]
    assert v.observation_space == gym.vector.utils.batch_space(v.single_observation_space, n)
    assert v.action_space == gym.vector.utils.batch_space(v.single_action_space, n)
    obs, info = v.reset()
    assert isinstance(obs, np.ndarray) and obs.dtype == v.single_observation_space.dtype and obs in v.observation_space
    assert isinstance(info, dict)
    v.action_space.seed(0)
    for _ in range(25):
        obs, r, te, tr, info = v.step(v.action_space.sample())
        assert obs.dtype == v.single_observation_space.dtype and obs.shape[0] == n and obs in v.observation_space
        assert r.dtype == np.float64 and r.shape == (n,) and te.dtype == tr.dtype == np.bool_ and te.shape == (n,)
        assert isinstance(info, dict)


def test_autoreset_mode_errors():
    env, params = make("CartPole-v1")
    with pytest.raises(ValueError, match=r"autoreset_mode: expected AutoresetMode.SAME_STEP or AutoresetMode.NEXT_STEP, got .*DISABLED"):
        to_gymnasium(env, params, 2, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="autoreset_mode: expected .* got 'next'"):
        to_gymnasium(env, params, 2, autoreset_mode="next")
    v = to_gymnasium(env, params, 2, autoreset_mode="SameStep")
    assert v.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP


# ------------------------------------------------------------------ one env as gymnasium.Env
def _checker_warnings(env, **kwargs):
    import warnings

    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        check_env(env, **kwargs)
    return {str(w.message) for w in rec}


@pytest.mark.parametrize(
    "env_id, gym_id",
    [("CartPole-v1", "CartPole-v1"), ("Pendulum-v1", "Pendulum-v1"), ("MountainCarContinuous-v0", "MountainCarContinuous-v0"),
     ("Acrobot-v1", "Acrobot-v1"), ("Taxi-v3", "Taxi-v4")],
)
def test_single_env_passes_gymnasium_check_env(env_id, gym_id):
    env, params = make(env_id)
    ours = to_gymnasium_env(env, params)
    assert isinstance(ours, gym.Env) and ours.unwrapped is ours
    g = gym.make(gym_id).unwrapped
    assert ours.observation_space == g.observation_space and ours.action_space == g.action_space
    # check_env raises on API errors; its warnings must be ones gymnasium's own env also gets
    ours_w = _checker_warnings(ours)
    ref_w = _checker_warnings(g, skip_render_check=True)
    extra = ours_w - ref_w
    assert all("Not able to test alternative render modes" in w for w in extra), extra
    assert ref_w - ours_w == set(), ref_w - ours_w  # and the same warnings as gymnasium's env (e.g. inf bounds)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_single_env_with_rgb_array_passes_check_env_render_checks(env_id):
    env, params = make(env_id)
    ours = to_gymnasium_env(env, params, render_mode="rgb_array")
    assert ours.metadata["render_modes"] == ["rgb_array"]
    ours_w = _checker_warnings(ours)
    assert not any("render" in w.lower() and "spec" not in w for w in ours_w), ours_w


def test_single_env_replays_funrl_and_truncates():
    env, params = make("CartPole-v1", max_episode_steps=7)
    e = to_gymnasium_env(env, params)
    obs, info = e.reset(seed=11)
    key, sub = jr.split(jr.key(11), 2)
    w_obs, state = env.reset(sub, params)
    np.testing.assert_array_equal(obs, w_obs.numpy())
    assert obs.dtype == np.float32 and info == {}
    for t in range(7):
        key, sub = jr.split(key, 2)
        w = env.step(sub, state, torch.tensor(t % 2), params, autoreset=False)
        state = w[1]
        obs, r, te, tr, info = e.step(t % 2)
        np.testing.assert_array_equal(obs, w[0].numpy())
        assert type(r) is float and type(te) is bool and type(tr) is bool
        assert (te, tr) == (bool(w[3]), bool(w[4])) and info == {}
    assert tr and not te  # alternating pushes keep the pole up; the time limit ends it
    obs2, _ = e.reset(seed=11)
    np.testing.assert_array_equal(obs2, env.reset(jr.split(jr.key(11), 2)[1], params)[0].numpy())


def test_single_env_infos_and_errors():
    env, params = make("FrozenLake-v1")
    e = to_gymnasium_env(W.LogWrapper(env), params, seed=0)
    with pytest.raises(RuntimeError, match="step: call reset"):
        e.step(0)
    obs, _ = e.reset()
    assert type(obs) is int
    _, _, _, _, info = e.step(1)
    assert set(info) == {"returned_episode_returns", "returned_episode_lengths", "returned_episode"}
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in info.values())
    with pytest.raises(ValueError, match=r"action: expected shape \(\)"):
        e.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="options: expected None"):
        e.reset(options={"low": 0})
    with pytest.raises(TypeError, match="seed: expected an int or None"):
        e.reset(seed=1.5)
    with pytest.raises(ValueError, match=r"render_mode: expected None or one of \[\] for FrozenLake"):
        to_gymnasium_env(env, params, render_mode="rgb_array")
    with pytest.raises(ValueError, match=r"render_mode: expected None or one of \['rgb_array'\]"):
        to_gymnasium_env(make("CartPole-v1")[0], render_mode="human")
    with pytest.raises(TypeError, match="env: expected a funrl.envs.Environment"):
        to_gymnasium_env(gym.make("CartPole-v1"))
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert e.render() is None  # no render mode: gymnasium's behaviour (a warning, no frame)


def test_next_step_reset_mask_cancels_the_pending_reset_as_gymnasium():
    n = 3
    env, params = make("CartPole-v1")
    ours = to_gymnasium(env, params, num_envs=n, seed=0, autoreset_mode=AutoresetMode.NEXT_STEP)
    ref = gym.make_vec("CartPole-v1", n, vectorization_mode="sync")
    ours.reset(seed=0)
    ref.reset(seed=0)
    done = np.zeros(n, dtype=bool)
    for _ in range(200):  # push right until some env ends in both (episode lengths differ: stop at ours)
        _, _, te, tr, _ = ours.step(np.ones(n, dtype=np.int64))
        if (te | tr).any():
            done = te | tr
            break
    assert done.any()
    for env_done in (ours, ref):
        if env_done is ref:  # bring gymnasium to the same pending-reset situation
            ref._autoreset_envs = done.copy()
        env_done.reset(options={"reset_mask": done})
        _, r, te, tr, _ = env_done.step(np.zeros(n, dtype=np.int64))
        np.testing.assert_array_equal(r, np.ones(n))  # a real step everywhere, no extra reset step
