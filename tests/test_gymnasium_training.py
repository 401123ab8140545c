"""Training on any gymnasium env: ``funrl.envs.make("gymnasium:ID")`` (funrl/envs/gymnasium_env.py).

The oracle is gymnasium itself: the same env id driven directly with the same
seeds (``seed_from_key`` of the funrl keys) and the same actions must give the
same observations, rewards, flags and final observations, step by step, also
under nested ``vmap`` (seeds x envs) where every element steps its own copy.
"""

import dataclasses
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import gymnasium

import funrl
from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import tree
from funrl.cli import main as cli_main
from funrl.envs.core import reset_key
from funrl.envs.gymnasium_env import GymnasiumEnv, GymnasiumState, make_gymnasium, seed_from_key

# 6 updates of 10 env steps: learning from step 20 on batches of 8, checkpoints every 2 updates
TINY_DQN = dict(algo="dqn", env="gymnasium:CartPole-v1", seeds=2, total_steps=60, progress=False, plot=False,
                checkpoint_every=2, learning_starts=20, batch_size=8, buffer_size=64, hidden_sizes=(8,))


def test_seed_from_key_joins_the_two_words():
    assert seed_from_key(jr.key(5)) == 5
    assert seed_from_key(jr.key(2**33 + 7)) == 2**33 + 7  # words [2, 7]
    assert seed_from_key(torch.tensor([0xFFFFFFFF, 1])) == (0xFFFFFFFF << 32) | 1
    assert seed_from_key(torch.tensor([-1, -2])) == (0xFFFFFFFF << 32) | 0xFFFFFFFE  # words modulo 2**32
    with pytest.raises(ValueError, match="key"):
        seed_from_key(torch.zeros(3, dtype=torch.int64))


def _oracle_copies(env_id, keys, **kwargs):
    """gymnasium's own envs, reset with the bridge's seeds: ``(envs, first observations)``."""
    envs = [gymnasium.make(env_id, **kwargs) for _ in range(keys.shape[0])]
    return envs, [e.reset(seed=seed_from_key(k))[0] for e, k in zip(envs, keys)]


@pytest.mark.exactness
@pytest.mark.parametrize("env_id,kwargs", [("CartPole-v1", {"max_episode_steps": 12}), ("Pendulum-v1", {"max_episode_steps": 7})])
def test_steps_equal_gymnasium_under_nested_vmap(env_id, kwargs):
    """2 seeds x 3 envs, 30 steps: obs, reward, flags and final_obs equal gymnasium's own env, auto-resets included."""
    env, params = funrl.envs.make("gymnasium:" + env_id, **kwargs)
    S, E, n = 2, 3, 6
    keys = jr.split(jr.key(0), n)
    nested = lambda f, dims: torch.func.vmap(torch.func.vmap(f, in_dims=dims), in_dims=dims)  # noqa: E731
    obs, state = nested(env.reset, (0, None))(keys.reshape(S, E, 2), params)
    assert sorted(state.handle.reshape(-1).tolist()) == list(range(n)), "one copy per (seed, env)"
    oracle, first = _oracle_copies(env_id, keys, **kwargs)
    assert np.array_equal(obs.reshape(n, -1).numpy(), np.stack(first).reshape(n, -1))
    step = nested(env.step, (0, 0, 0, None))
    space = env.action_space(params)
    key, ended = jr.key(1), {"terminated": 0, "truncated": 0}
    for _ in range(30):
        key, k_act, k_env = jr.split(key, 3)
        actions = torch.func.vmap(space.sample)(jr.split(k_act, n))
        step_keys = jr.split(k_env, n)
        obs, state, reward, term, trunc, info = step(
            step_keys.reshape(S, E, 2), state, actions.reshape((S, E) + space.shape), params
        )
        for i, g in enumerate(oracle):
            a = int(actions[i]) if space.shape == () else actions[i].numpy()
            o, r, te, tr, _ = g.step(a)
            assert np.array_equal(info["final_obs"].reshape(n, -1)[i].numpy(), o.reshape(-1))
            assert float(reward.reshape(n)[i]) == np.float32(r)
            assert (bool(term.reshape(n)[i]), bool(trunc.reshape(n)[i])) == (te, tr)
            if te or tr:
                ended["terminated" if te else "truncated"] += 1
                o, _ = g.reset(seed=seed_from_key(reset_key(step_keys[i])))
            assert np.array_equal(obs.reshape(n, -1)[i].numpy(), o.reshape(-1))
    assert torch.equal(state.steps, torch.full((S, E), 30))
    # the comparison covered episode ends: CartPole both ways, Pendulum (no terminal states) by its time limit
    assert ended["truncated"] > 0 and (ended["terminated"] > 0 or env_id == "Pendulum-v1")


def test_gymnasium_cartpole_follows_funrl_cartpole_physics():
    """From the same initial state and actions, gymnasium's CartPole and funrl's (float64) agree to 1e-6."""
    ours, our_params = funrl.envs.make("CartPole-v1", dtype=torch.float64)
    theirs, their_params = funrl.envs.make("gymnasium:CartPole-v1")
    obs_a, st_a = ours.reset(jr.key(3), our_params)
    obs_b, st_b = theirs.reset(jr.key(3), their_params)
    # the initial states differ (each draws its own); put funrl's into the gymnasium copy
    theirs.copy(st_b.handle).unwrapped.state = np.array([float(v) for v in obs_a], dtype=np.float64)
    key, steps = jr.key(4), 0
    while True:
        key, k_act, k_env = jr.split(key, 3)
        a = jr.randint(k_act, (), 0, 2)
        obs_a, st_a, r_a, te_a, tr_a, info_a = ours.step(k_env, st_a, a, our_params)
        obs_b, st_b, r_b, te_b, tr_b, info_b = theirs.step(k_env, st_b, a, their_params)
        steps += 1
        torch.testing.assert_close(info_b["final_obs"], info_a["final_obs"].float(), rtol=0, atol=1e-6)
        assert (float(r_a), bool(te_a), bool(tr_a)) == (float(r_b), bool(te_b), bool(tr_b))
        if te_a:
            break
    assert steps > 3  # a whole episode, ended by the pole or the cart in both


def test_a_stale_or_restored_state_ends_its_episode_as_truncated():
    env, params = funrl.envs.make("gymnasium:CartPole-v1")
    obs0, s0 = env.reset(jr.key(0), params)
    _, s1, r1, *_ = env.step(jr.key(1), s0, 1, params)
    assert float(r1) == 1.0 and int(s1.steps) == 1
    # s0 again: its copy has moved on, so the step cannot continue that episode
    k = jr.key(2)
    obs, s, reward, term, trunc, info = env.step(k, s0, 1, params)
    expected, _ = gymnasium.make("CartPole-v1").reset(seed=seed_from_key(reset_key(k)))
    assert (float(reward), bool(term), bool(trunc)) == (0.0, False, True)
    assert torch.equal(info["final_obs"], obs0) and np.array_equal(obs.numpy(), expected)
    assert int(s.time) == 0 and int(s.steps) == 1
    # the copy restarted: the new state steps on normally
    _, s2, r2, _, tr2, _ = env.step(jr.key(3), s, 0, params)
    assert (float(r2), bool(tr2), int(s2.time)) == (1.0, False, 1)
    # a state from another env object (a resumed run's checkpoint): the same truncation
    other, _ = funrl.envs.make("gymnasium:CartPole-v1")
    _, _, reward, _, trunc, info = other.step(jr.key(4), s2, 0, params)
    assert float(reward) == 0.0 and bool(trunc) and torch.equal(info["final_obs"], s2.obs)
    assert other.num_copies == 1


def test_make_passes_kwargs_to_gymnasium_and_converts_spaces():
    env, params = funrl.envs.make("gymnasium:Pendulum-v1", dtype=torch.float64, max_episode_steps=9, g=5.0)
    assert isinstance(env, GymnasiumEnv) and env.name == "gymnasium:Pendulum-v1"
    assert int(params.max_episode_steps) == 9
    obs, st = env.reset(jr.key(0), params)
    assert obs.dtype == torch.float64 and env.copy(st.handle).unwrapped.g == 5.0
    act = env.action_space(params)
    assert act.shape == (1,) and act.dtype == torch.float64 and float(act.high[0]) == 2.0
    cart, p = funrl.envs.make("gymnasium:CartPole-v1")
    assert cart.action_space(p) == funrl.envs.spaces.Discrete(2) and int(p.max_episode_steps) == 500
    assert GymnasiumEnv.COMPILE is False


def test_unknown_ids_bad_kwargs_and_unsupported_spaces_are_clear_errors():
    with pytest.raises(ValueError, match=r"gymnasium has no environment 'CartPol-v1'.*gymnasium:CartPole-v1"):
        funrl.envs.make("gymnasium:CartPol-v1")
    with pytest.raises(ValueError, match=r"env_params: gymnasium.make\('CartPole-v1'.*bogus"):
        funrl.envs.make("gymnasium:CartPole-v1", bogus=1)
    with pytest.raises(TypeError, match="dtype"):
        make_gymnasium("CartPole-v1", dtype=torch.int64)
    gymnasium.register("FunrlTestDictObs-v0", entry_point=_DictObsEnv)
    try:
        with pytest.raises(TypeError, match=r"gymnasium:FunrlTestDictObs-v0: its observation space Dict.*Box"):
            funrl.envs.make("gymnasium:FunrlTestDictObs-v0")
    finally:
        gymnasium.registry.pop("FunrlTestDictObs-v0")


class _DictObsEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Dict({"x": gymnasium.spaces.Discrete(2)})
    action_space = gymnasium.spaces.Discrete(2)


def test_a_missing_box2d_names_the_pip_install(monkeypatch):
    # as on a machine without the extra (CI): Box2D cannot be imported, nor a cached lunar_lander
    monkeypatch.setitem(sys.modules, "Box2D", None)
    for name in [m for m in sys.modules if m.startswith("gymnasium.envs.box2d")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"gymnasium:LunarLander-v3 needs .*pip install \"funrl\[box2d\]\""):
        funrl.envs.make("gymnasium:LunarLander-v3")


def test_the_ops_fake_implementations_match_the_real_outputs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    env, params = funrl.envs.make("gymnasium:CartPole-v1")
    token = env._copies.token
    keys = jr.split(jr.key(0), 3)
    real_reset = torch.ops.funrl.gymnasium_reset(token, keys, torch.float32)
    real_step = torch.ops.funrl.gymnasium_step(
        token, real_reset[1], torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64), keys,
        real_reset[0], True,
    )
    with FakeTensorMode() as mode:
        fk = mode.from_tensor(keys)
        fake_reset = torch.ops.funrl.gymnasium_reset(token, fk, torch.float32)
        fake_step = torch.ops.funrl.gymnasium_step(
            token, mode.from_tensor(real_reset[1]), mode.from_tensor(torch.zeros(3, dtype=torch.int64)),
            mode.from_tensor(torch.ones(3, dtype=torch.int64)), fk, mode.from_tensor(real_reset[0]), True,
        )
    for real, fake in zip(real_reset + real_step, fake_reset + fake_step):
        assert (real.shape, real.dtype) == (fake.shape, fake.dtype)
    assert env.num_copies == 3  # the fake calls made no copies


def test_funrl_envs_mentions_the_gymnasium_prefix(capsys):
    assert cli_main(["envs"]) == 0
    assert "gymnasium:<ID>" in capsys.readouterr().out


# ---------------------------------------------------------------- training through the runner
def test_funrl_train_dqn_on_a_gymnasium_env_writes_the_results_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(["train", "dqn", "--env", "gymnasium:CartPole-v1", "--seeds", "2", "--total-steps", "40",
                     "--set", "learning_starts=20", "--set", "batch_size=8", "--set", "buffer_size=64",
                     "--set", "hidden_sizes=8", "--no-plot", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "compile off" in err  # the runner switched compile off, and said so
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["env"] == "gymnasium:CartPole-v1" and cfg["compile"] is False
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("update,seed,env_steps,episode_return") and len(rows) == 1 + 4 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps_per_seed"] == 40 and len(summary["per_seed_final_return"]) == 2
    assert ckpt.CheckpointManager(out / "checkpoints").latest_step() == 4


@pytest.mark.parametrize("algo,env_id,kwargs", [
    ("ppo", "gymnasium:CartPole-v1", dict(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=1, hidden_sizes=(8,))),
    ("sac", "gymnasium:Pendulum-v1", dict(learning_starts=8, batch_size=4, buffer_size=16, hidden_sizes=(8,))),
    ("td3", "gymnasium:Pendulum-v1", dict(learning_starts=8, batch_size=4, buffer_size=16, hidden_sizes=(8,))),
    ("ddpg", "gymnasium:Pendulum-v1", dict(learning_starts=8, batch_size=4, buffer_size=16, hidden_sizes=(8,))),
])
def test_the_other_algorithms_train_on_gymnasium_envs(algo, env_id, kwargs, tmp_path):
    """Discrete (PPO) and Box actions (SAC, TD3, DDPG) through the runner, with funrl's compile default."""
    result = funrl.run(algo, env=env_id, seeds=2, total_steps=16, out=str(tmp_path / algo), progress=False,
                       plot=False, **kwargs)
    assert result["summary"]["env_steps_per_seed"] == 16 and json.loads((tmp_path / algo / "config.json").read_text())["compile"] is False
    for name, values in result["metrics"].items():
        assert values.shape[0] == 2 and torch.isfinite(values).all(), name  # [seeds, updates]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, funrl.run(**TINY_DQN, out=str(out))


def test_the_same_seed_twice_gives_identical_metrics(full, tmp_path):
    again = funrl.run(**TINY_DQN, out=str(tmp_path / "again"))
    first = full[1]["metrics"]
    assert set(first) == set(again["metrics"])
    for k in first:
        assert torch.equal(first[k], again["metrics"][k]), k
    # and the run learned from real episodes (CartPole's random-policy episodes end well within 60 steps)
    assert float(first["episodes"].sum()) > 0
    other = funrl.run(**{**TINY_DQN, "seed": 1}, out=str(tmp_path / "other"))
    assert not torch.equal(first["episode_return"], other["metrics"]["episode_return"])


def _interrupted_copy(src, dst):
    """``src`` as if stopped after update 4: its newest checkpoint (6) and summary.json removed."""
    shutil.copytree(src, dst)
    os.unlink(ckpt.CheckpointManager(dst / "checkpoints").path(6))
    os.unlink(dst / "summary.json")
    return dst


def test_resume_finishes_the_run_reproducibly(full, tmp_path):
    """Resume restarts the env copies (documented), so it is reproducible, not bit-identical to `full`."""
    src, result = full
    a = _interrupted_copy(src, tmp_path / "a")
    b = _interrupted_copy(src, tmp_path / "b")
    ra = funrl.run(resume=str(a), progress=False, plot=False)
    rb = funrl.run(resume=str(b), progress=False, plot=False)
    assert ra["summary"]["resumed_from_update"] == 4 and (a / "summary.json").exists()
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert tree.equal(ckpt.CheckpointManager(a / "checkpoints").load()[1]["state"],
                      ckpt.CheckpointManager(b / "checkpoints").load()[1]["state"])
    # the updates before the checkpoint are the uninterrupted run's
    full_rows = (src / "metrics.csv").read_text().splitlines()
    resumed_rows = (a / "metrics.csv").read_text().splitlines()
    assert len(resumed_rows) == len(full_rows) == 1 + 6 * 2 and resumed_rows[:9] == full_rows[:9]
    state = ra["state"].actor.env_state.env_state
    assert isinstance(state, GymnasiumState) and torch.equal(state.steps, torch.full((2, 1), 60))


def test_the_lunarlander_benchmark_script_runs_both_sides(tmp_path):
    """benchmarks/lunarlander.py at a smoke size, on CartPole (CI has no box2d): both rows and the machine."""
    import importlib.util
    from pathlib import Path

    from funrl.algorithms import dqn

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "lunarlander.py"
    spec = importlib.util.spec_from_file_location("_bench_lunarlander", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.trailing_mean(np.array([5.0, 0.0, 1.0, 3.0]), np.array([1, 0, 2, 1]), 3) == pytest.approx(5 / 3)
    out = tmp_path / "ll.json"
    assert bench.main(["--env", "CartPole-v1", "--steps", "60", "--learning-starts", "20", "--last-episodes", "2",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"] == {**json.loads(json.dumps(dataclasses.asdict(dqn.Config()))), "total_timesteps": 60,
                                "learning_starts": 20}
    for side in ("funrl", "cleanrl_style"):
        row = result[side]
        # random-policy CartPole episodes last ~20 steps: both sides finished some, returns in [1, 60]
        assert sum(row["episodes"]) >= 2 and 1.0 <= row["return"] <= 60.0 and row["wall_s"] > 0
    assert result["machine"]["cpus"] == os.cpu_count() and result["steps_per_seed"] == 60
    assert result["funrl"]["compile"] is False and GymnasiumEnv.COMPILE is False
