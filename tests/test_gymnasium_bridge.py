"""Tests for funrl.envs.gymnasium: to_gymnasium (funrl -> gymnasium VectorEnv) and from_gymnasium."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from funrl import random as jr
from funrl.envs import make, vmap_reset, vmap_step
from funrl.envs import wrappers as W
from funrl.envs.gymnasium import FunrlVectorEnv, GymnasiumVectorEnv, from_gymnasium, to_gymnasium


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
