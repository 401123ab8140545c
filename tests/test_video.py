"""``funrl eval --video``: one GIF per seed, decoded with imageio, holding every state of the episode
(first frame: the reset state drawn by funrl.envs.rendering; as many frames as steps + 1, checked
against gymnasium's own CartPole), and clear errors for what cannot be filmed."""

import json
import shutil
import sys

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import funrl
from funrl import random as jr
from funrl.cli import main as cli_main
from funrl.envs.rendering import render_frame
from funrl.video import episode_frames, record_run, write_gif

# 2 updates of 32 env steps per seed: a barely trained CartPole policy, episodes of tens of steps
RUN = dict(algo="ppo", seeds=2, total_steps=64, compile=False, progress=False, plot=False,
           num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))
CARTPOLE_MS = 20  # gymnasium's CartPole renders at 50 fps


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "run"
    funrl.run(**RUN, out=str(out))
    return out


def _decode(path) -> list:
    """The GIF's frames, each repeated as many times as its duration holds CartPole frames."""
    images = iio.imread(path, index=None)
    frames = []
    for i, image in enumerate(images):
        meta = iio.immeta(path, index=i)
        assert meta["duration"] % CARTPOLE_MS == 0, meta
        frames += [image] * (meta["duration"] // CARTPOLE_MS)
    return frames


def test_record_run_writes_one_gif_per_seed(run_dir):
    videos = record_run(str(run_dir), episodes=1, seed=7)
    assert [v["seed"] for v in videos] == [0, 1]
    env, params = funrl.envs.make("CartPole-v1")
    for v in videos:
        assert v["path"] == str(run_dir / "videos" / f"seed{v['seed']}.gif")
        frames = _decode(v["path"])
        # CartPole pays 1 per step: an episode of `return` steps shows return + 1 states
        assert len(frames) == v["frames"] == int(v["returns"][0]) + 1
        assert frames[0].shape == (400, 600, 3) and frames[0].dtype == np.uint8
        assert iio.immeta(v["path"], index=0)["loop"] == 0
        # the first frame: the reset state of the documented key, drawn by funrl's renderer
        k_reset = jr.split(jr.fold_in(jr.fold_in(jr.key(7), v["seed"]), 0))[0]
        _, state = env.reset(k_reset, params)
        np.testing.assert_array_equal(frames[0], render_frame(env, state, params))
        assert not np.array_equal(frames[0], frames[-1])


def test_episode_frames_against_gymnasiums_cartpole():
    env, params = funrl.envs.make("CartPole-v1")
    push_right = lambda state, key, obs: torch.ones(obs.shape[0], dtype=torch.int64)  # noqa: E731
    key = jr.key(3)
    frames, ret, steps = episode_frames(push_right, None, env, params, key)
    _, state = env.reset(jr.split(key)[0], params)
    # gymnasium's own CartPole from the same initial state, pushed right until it ends
    g = gym.make("CartPole-v1").unwrapped
    g.reset(seed=0)
    g.state = np.array([state.x.item(), state.x_dot.item(), state.theta.item(), state.theta_dot.item()])
    n, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = g.step(1)
        n, done = n + 1, terminated or truncated
    assert steps == n == ret and len(frames) == n + 1
    np.testing.assert_array_equal(frames[0], render_frame(env, state, params))
    # max_steps stops a long episode early
    frames, ret, steps = episode_frames(push_right, None, env, params, key, max_steps=3)
    assert (len(frames), ret, steps) == (4, 3.0, 3)


def test_write_gif_round_trips_and_checks_its_input(tmp_path):
    rng = np.random.default_rng(0)
    colours = np.array([[255, 255, 255], [0, 0, 0], [202, 152, 101]], dtype=np.uint8)
    frames = [colours[rng.integers(0, 3, (5, 7))] for _ in range(3)]
    frames.insert(1, frames[0])  # a repeated frame is stored once, shown twice as long
    path = write_gif(frames, str(tmp_path / "sub" / "x.gif"), fps=50)
    got = _decode(path)
    assert len(got) == 4
    for a, b in zip(got, frames):
        np.testing.assert_array_equal(a, b)
    # beyond 256 colours: the first 256 stay exact, a later colour becomes its nearest palette colour
    grid = np.stack([*np.meshgrid(np.arange(16) * 16, np.arange(16) * 16, indexing="ij"), np.zeros((16, 16), int)], -1)
    extra = np.zeros((16, 16, 3), dtype=np.uint8)
    extra[0, 0] = (20, 33, 1)  # nearest to (16, 32, 0)
    got = iio.imread(write_gif([grid.astype(np.uint8), extra], str(tmp_path / "many.gif"), fps=50), index=None)
    np.testing.assert_array_equal(got[0], grid)
    assert tuple(got[1][0, 0]) == (16, 32, 0) and (got[1][1:] == 0).all()
    with pytest.raises(ValueError, match="frames: expected at least one frame"):
        write_gif([], str(tmp_path / "y.gif"), 50)
    with pytest.raises(ValueError, match=r"frames\[1\]: expected a uint8 array \(H, W, 3\).*\(5, 7, 3\)"):
        write_gif([frames[0], frames[0][:4]], str(tmp_path / "y.gif"), 50)
    with pytest.raises(ValueError, match="fps: expected a number > 0, got 0"):
        write_gif(frames, str(tmp_path / "y.gif"), 0)
    assert not (tmp_path / "y.gif").exists()


def test_cli_eval_video(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out, ignore=shutil.ignore_patterns("videos"))
    assert cli_main(["eval", str(out), "--episodes", "1", "--seed", "7", "--video", "--video-episodes", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ".gif" in ln]
    env, params = funrl.envs.make("CartPole-v1")
    assert len(lines) == 2
    for i, line in enumerate(lines):
        gif = out / "videos" / f"seed{i}.gif"
        head, tail = line.split(" frames, return ")
        assert head.startswith(f"seed {i}: {gif} (")
        returns = [float(r) for r in tail.rstrip(")").split(", ")]
        frames = _decode(gif)
        # two episodes one after the other, each return + 1 frames, the first from --seed's key
        assert len(returns) == 2 and len(frames) == int(head.split("(")[-1]) == sum(int(r) + 1 for r in returns)
        _, state = env.reset(jr.split(jr.fold_in(jr.fold_in(jr.key(7), i), 0))[0], params)
        np.testing.assert_array_equal(frames[0], render_frame(env, state, params))
        _, state = env.reset(jr.split(jr.fold_in(jr.fold_in(jr.key(7), i), 1))[0], params)
        np.testing.assert_array_equal(frames[int(returns[0]) + 1], render_frame(env, state, params))


def test_what_cannot_be_filmed_is_a_clear_error(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "env": "FrozenLake-v1"}))
    with pytest.raises(ValueError, match="trained on FrozenLake-v1, which funrl cannot render"):
        record_run(str(out))
    assert cli_main(["eval", str(out), "--video"]) == 2
    assert "which funrl cannot render" in capsys.readouterr().err
    env, params = funrl.envs.make("FrozenLake-v1")
    with pytest.raises(TypeError, match="env: expected a classic-control env"):
        episode_frames(lambda s, k, o: o, None, env, params, jr.key(0))
    with pytest.raises(ValueError, match="episodes: expected an int >= 1, got 0"):
        record_run(str(run_dir), episodes=0)
    # without imageio: an error that says how to install it, before any episode is played
    monkeypatch.setitem(sys.modules, "imageio", None)
    monkeypatch.delitem(sys.modules, "imageio.v3")
    with pytest.raises(ImportError, match=r"install it with: pip install 'funrl\[video\]'"):
        record_run(str(run_dir), out_dir=str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()
