"""The command line and funrl.run end to end, on tiny budgets (eager, so no compile cost)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import tree
from helpers import TINY_PPO_ARGS

TINY = TINY_PPO_ARGS
TINY_KW = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))


def funrl_cli(*args, timeout=240, check=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "funrl", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"funrl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_algos_and_envs_lists():
    out = funrl_cli("algos").stdout
    for name in ["ppo", "dqn", "a2c", "reinforce", "tabular", "ddpg", "td3", "sac"]:
        assert name in out
    envs = funrl_cli("envs").stdout
    for env_id in ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "FrozenLake-v1", "Taxi-v3"]:
        assert env_id in envs


def test_train_help_lists_every_config_field_with_default():
    from funrl.algorithms import ppo

    out = funrl_cli("train", "ppo", "--help").stdout
    for f in ppo.Config.__dataclass_fields__:
        assert f"{f} = " in out
    assert "clip_coef = 0.2" in out and "ratio clip range (batchable)" in out  # default and its comment
    assert "total_timesteps = 500_000" in out


@pytest.mark.parametrize("algo", sorted(__import__("funrl.algorithms").algorithms.ALGORITHMS))
def test_config_read_from_source_equals_the_dataclass(algo):
    """train --help reads Config from the source (no torch): same fields, order, defaults and HYPERPARAMS."""
    import ast
    import dataclasses

    from funrl._config_source import config_fields, hyperparams
    from funrl.algorithms import ALGORITHMS, get

    module = get(algo)
    read = config_fields(ALGORITHMS[algo])
    assert [f.name for f in read] == [f.name for f in dataclasses.fields(module.Config)]
    for f in read:
        assert ast.literal_eval(f.default) == getattr(module.Config(), f.name), f
        assert f.comment, f"{algo}.Config.{f.name} has no #: comment for --help"
    assert hyperparams(ALGORITHMS[algo]) == tuple(getattr(module, "HYPERPARAMS", ()))


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "ppo", "--set", "learning_rat=0.1"], "--set learning_rat: unknown ppo config field (did you mean learning_rate?)"),
        (["train", "ppo", "--set", "learning_rate=fast"], "config.learning_rate: expected a float, got 'fast'"),
        (["train", "ppo", "--set", "num_envs=2.5"], "config.num_envs: expected an int, got '2.5'"),
        (["train", "ppo", "--set", "gamma=1.5"], "config.gamma: expected a number in [0, 1], got 1.5"),
        (["train", "ppo", "--set", "gamma"], "--set: expected FIELD=VALUE, got 'gamma'"),
        (["train", "ppo", "--env", "CartPole-v9"], "CartPole-v9"),
        (["train", "ppo", "--seeds", "0"], "seeds: expected an int >= 1, got 0"),
    ],
)
def test_bad_flags_fail_before_anything_runs(tmp_path, args, message):
    out = tmp_path / "run"
    proc = funrl_cli(*args, "--out", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not out.exists()


def test_unknown_algorithm_is_a_clear_error(tmp_path):
    proc = funrl_cli("train", "ppo2", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode != 0
    assert "ppo2" in proc.stderr


def test_train_eval_plot_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = funrl_cli(
        "train", "ppo", "--seeds", "2", "--total-steps", "256", "--no-compile", "--out", str(out),
        "--checkpoint-every", "4", *TINY,
    )
    assert "final return: IQM" in proc.stdout
    assert "env steps/s summed over seeds" in proc.stdout  # the summary line states its unit
    # plain progress lines when stdout/stderr is not a terminal
    assert "[ppo/CartPole-v1]" in proc.stdout and "env steps summed over 2 seeds" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["algo"] == "ppo" and cfg["seeds"] == 2 and cfg["config"]["num_envs"] == 2
    assert cfg["versions"]["torch"] == torch.__version__
    summary = json.loads((out / "summary.json").read_text())
    for k in ["iqm", "ci_low", "ci_high", "mean", "per_seed_final_return", "wall_time_s", "sps"]:
        assert k in summary
    assert len(summary["per_seed_final_return"]) == 2
    assert summary["ci_low"] <= summary["iqm"] <= summary["ci_high"]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    num_updates = 256 // 32
    assert rows[0].startswith("update,seed,env_steps,episode_return")
    assert len(rows) == 1 + num_updates * 2
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt_000000000004.pt", "ckpt_000000000008.pt"]

    ev = funrl_cli("eval", str(out), "--episodes", "3")
    lines = ev.stdout.strip().splitlines()
    assert lines[0] == "checkpoint: update 8 of 8"  # the checkpoint evaluated comes first
    lines = lines[1:]
    assert lines[0].split() == ["seed", "mean", "return", "std", "episodes"]
    assert len(lines) == 1 + 2 + 1 and lines[-1].startswith("IQM")
    # a random-ish CartPole policy survives at least 8 steps per episode
    assert all(float(l.split()[1]) >= 8 for l in lines[1:3])

    png = tmp_path / "curves.png"
    funrl_cli("plot", str(out), str(out), "--out", str(png))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _final_state(directory):
    manager = ckpt.CheckpointManager(os.path.join(directory, "checkpoints"))
    step, saved, _ = manager.load()
    return step, saved["state"]


def test_kill_and_resume_reaches_the_same_final_parameters(tmp_path):
    common = ["train", "ppo", "--seeds", "2", "--total-steps", "1024", "--no-compile", "--no-plot",
              "--checkpoint-every", "4", *TINY]
    full = tmp_path / "full"
    funrl_cli(*common, "--out", str(full))

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "funrl", *common, "--out", str(killed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = killed / "checkpoints" / "ckpt_000000000004.pt"
    deadline = time.time() + 180
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    step_before, _ = _final_state(killed)
    assert step_before < 32  # it really died before the end

    funrl_cli("train", "--resume", str(killed), "--no-plot")
    s_full, state_full = _final_state(full)
    s_res, state_res = _final_state(killed)
    assert s_full == s_res == 32
    assert tree.equal(state_full, state_res)
    rows_full = (full / "metrics.csv").read_text()
    rows_res = (killed / "metrics.csv").read_text()
    assert rows_full == rows_res


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    common = ["train", "ppo", "--seeds", "1", "--total-steps", "512", "--no-compile", "--no-plot",
              "--checkpoint-every", "4", *TINY]
    run_dir = tmp_path / "run"
    funrl_cli(*common, "--out", str(run_dir))
    _, final = _final_state(run_dir)
    newest = run_dir / "checkpoints" / "ckpt_000000000016.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a torn write
    with pytest.raises(ckpt.CheckpointError, match="ckpt_000000000016.pt"):
        ckpt.load(str(newest))
    # resume warns about the bad file, restarts from update 12 and reproduces update 16
    proc = funrl_cli("train", "--resume", str(run_dir), "--no-plot")
    assert "ckpt_000000000016.pt" in proc.stderr
    _, again = _final_state(run_dir)
    assert tree.equal(final, again)


def test_python_api_mirrors_cli(tmp_path):
    result = funrl.run("ppo", env="CartPole-v1", seeds=2, total_steps=128, out=str(tmp_path / "api"),
                       compile=False, progress=False, plot=False, **TINY_KW)
    assert result["metrics"]["episode_return"].shape == (2, 4)  # [seeds, updates]
    assert result["summary"]["seeds"] == 2
    assert os.path.exists(tmp_path / "api" / "summary.json")
    with pytest.raises(ValueError, match="unknown ppo config field"):
        funrl.run("ppo", seeds=1, total_steps=64, out=str(tmp_path / "bad"), compile=False, progress=False,
                  no_such_field=1)


def test_seed_i_is_the_same_whatever_the_number_of_seeds():
    from funrl.algorithms.common import seed_keys

    assert torch.equal(seed_keys(3, 5)[:2], seed_keys(3, 2))


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch):
    import sys as _sys

    from funrl import plotting

    monkeypatch.setitem(_sys.modules, "matplotlib", None)  # what an install without the [plot] extra sees
    monkeypatch.setitem(_sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'funrl\[plot\]'"):
        plotting._require_matplotlib()


def test_chunk_returns_weights_by_episodes_and_marks_seeds_without_episodes():
    from funrl.runner import chunk_returns

    chunk = {
        "episode_return": torch.tensor([[10.0, 20.0], [0.0, 0.0], [5.0, 0.0]]),  # [S=3, C=2]
        "episodes": torch.tensor([[1.0, 3.0], [0.0, 0.0], [2.0, 0.0]]),
    }
    out = chunk_returns(chunk)
    assert out[0].item() == (10.0 * 1 + 20.0 * 3) / 4
    assert math.isnan(out[1].item())  # no episode: not a return of 0
    assert out[2].item() == 5.0


def test_help_algos_envs_start_without_importing_torch():
    """funrl --help, algos, envs and train [ALGO] --help answer at once: they import neither torch nor an algorithm."""
    import subprocess
    import sys

    cases = (
        (["--help"], "algos"),
        (["algos"], "grpo       default env random-walks"),
        (["envs"], "CartPole-v1                  obs Box([-4.8, -inf, -0.41887903, -inf]"),
        (["train", "--help"], "clip_coef = 0.2"),
        (["train", "sac", "--help"], "policy_lr = 3e-4"),
    )
    for args, shown in cases:
        code = (
            "import sys\nfrom funrl.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert shown in proc.stdout
