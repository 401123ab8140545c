"""funrl export: a trained policy as a file that plain torch runs, with no funrl import.

Each exported file is loaded in a fresh Python that never imports funrl, plays
gymnasium's own env, and its actions on a batch of observations are compared
with funrl's ``evaluation_policy`` of the same seed (that comparison is what can fail).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.algorithms import get
from funrl.cli import main
from funrl.export import export_policy
from funrl.algorithms import resolve_config
from helpers import TINY

README = Path(__file__).resolve().parent.parent / "README.md"
GYM_ENV = {"ppo": "CartPole-v1", "dqn": "CartPole-v1", "sac": "Pendulum-v1"}

# runs in a fresh interpreter without funrl: argv = torchscript file, state_dict file, obs file, result file, env id
PLAIN_TORCH = r'''
import sys
import gymnasium as gym
import torch
ts_path, path, obs_path, out_path, env_id = sys.argv[1:]
{snippet}
scripted = torch.jit.load(ts_path)
obs = torch.load(obs_path, weights_only=True)
torch.save({{"torchscript": scripted(obs), "state_dict": policy(obs)}}, out_path)
env = gym.make(env_id)
for act in (scripted, policy):
    for episode in range(3):
        o, _ = env.reset(seed=episode)
        done, steps = False, 0
        while not done:
            a = act(torch.as_tensor(o, dtype=torch.float32)[None])[0]
            a = int(a) if a.dtype == torch.int64 else a.numpy()
            assert env.action_space.contains(a), a
            o, r, terminated, truncated, _ = env.step(a)
            done, steps = terminated or truncated, steps + 1
        assert steps > 0
assert "funrl" not in sys.modules, sorted(m for m in sys.modules if m.startswith("funrl"))
print("ok")
'''


def _snippet(text: str) -> str:
    """The state_dict loading snippet as documented (module docstring or README)."""
    return textwrap.dedent(text.split("rebuilds the policy", 1)[1].split("\n\n", 1)[1].split("\n\n", 1)[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    quiet = dict(seeds=2, compile=False, progress=False, plot=False)
    return {algo: (str(root / algo), funrl.run(algo, out=str(root / algo), **quiet, **TINY[algo]))
            for algo in (*GYM_ENV, "sft")}


def _observations(env_id: str, n: int = 256) -> torch.Tensor:
    """Observations spread over the state space: well past the states a tiny run sees."""
    g = torch.Generator().manual_seed(1)
    if env_id == "CartPole-v1":
        return torch.randn(n, 4, generator=g) * torch.tensor([1.0, 2.0, 0.2, 2.0])
    theta = torch.rand(n, generator=g) * 6.3 - 3.15
    return torch.stack([theta.cos(), theta.sin(), torch.randn(n, generator=g) * 4], 1)


def _funrl_actions(algo: str, result: dict, seed: int, obs: torch.Tensor) -> torch.Tensor:
    module, env_id, config = resolve_config(algo, None, None, TINY[algo])
    env, env_params = funrl.envs.make(env_id)
    act = module.evaluation_policy(config, env, env_params)
    with torch.no_grad():
        return act(tree.map(lambda x: x[seed], result["state"]), jr.key(0), obs)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("algo", list(GYM_ENV))
def test_export_runs_in_plain_torch_and_matches_funrl(algo, runs, tmp_path):
    run_dir, result = runs[algo]
    ts = export_policy(run_dir, seed=1, format="torchscript")
    sd = export_policy(run_dir, seed=1, format="state_dict", out=str(tmp_path / "policy.pt"))
    assert ts == os.path.join(run_dir, "policy_seed1.torchscript.pt") and sd == str(tmp_path / "policy.pt")
    obs = _observations(GYM_ENV[algo])
    torch.save(obs, tmp_path / "obs.pt")
    script = PLAIN_TORCH.format(snippet=_snippet(funrl.export.__doc__))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, ts, sd, str(tmp_path / "obs.pt"), str(tmp_path / "out.pt"),
                           GYM_ENV[algo]], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]

    got = torch.load(tmp_path / "out.pt", weights_only=True)
    want = _funrl_actions(algo, result, 1, obs)
    for fmt, actions in got.items():
        assert actions.dtype == want.dtype and actions.shape == want.shape, fmt
        if algo == "sac":  # continuous: float32 [B, 1] inside Pendulum's [-2, 2]
            assert want.shape == (len(obs), 1) and want.abs().max() <= 2
            torch.testing.assert_close(actions, want, rtol=1e-5, atol=1e-6, msg=lambda m: f"{fmt}: {m}")
        else:
            assert want.shape == (len(obs),) and torch.equal(actions, want), fmt
    # seed 0 is a different network: its export acts differently somewhere
    seed0 = torch.jit.load(export_policy(run_dir, seed=0, format="torchscript"))
    assert not torch.equal(seed0(obs), got["torchscript"])


def test_snippet_in_readme_is_the_documented_one():
    assert _snippet(README.read_text()).replace("```py\n", "").rstrip("`\n") == _snippet(funrl.export.__doc__).rstrip()


def _cli(capsys, *args):
    rc = main(["export", *args])
    return rc, capsys.readouterr().err


def test_bad_inputs_name_the_argument(runs, tmp_path, capsys):
    run_dir, _ = runs["ppo"]
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(ValueError, match=r"^run_dir: .*not a funrl results folder"):
        export_policy(str(tmp_path))
    assert _cli(capsys, str(tmp_path), "--format", "torchscript") == (
        2, f"funrl export: error: DIR: {str(tmp_path)!r} is not a funrl results folder (no config.json and checkpoints/)\n")

    for seed in (2, -1):
        with pytest.raises(ValueError, match=re.escape(f"seed: expected an int in [0, 2) (the run has 2 seeds), got {seed}")):
            export_policy(run_dir, seed=seed)
    rc, err = _cli(capsys, run_dir, "--seed", "2", "--format", "state_dict")
    assert rc == 2 and err.startswith("funrl export: error: --seed: expected an int in [0, 2)")

    with pytest.raises(ValueError, match=r"^format: expected one of torchscript, state_dict, onnx, got 'tflite'"):
        export_policy(run_dir, format="tflite")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", run_dir, "--format", "tflite"])
    assert exit_info.value.code == 2 and "argument --format: invalid choice: 'tflite'" in capsys.readouterr().err

    sft_dir, _ = runs["sft"]
    with pytest.raises(ValueError, match=r"^run_dir: .* is a sft run; export supports the env-based algorithms"):
        export_policy(sft_dir)
    rc, err = _cli(capsys, sft_dir, "--format", "torchscript")
    assert rc == 2 and "DIR:" in err and "export supports the env-based algorithms" in err
    assert not [f for f in os.listdir(run_dir) if f.startswith(".")]  # no temp file left behind


def test_onnx_without_the_extra_names_it(runs, monkeypatch, capsys):
    run_dir, _ = runs["ppo"]
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed (find_spec gives None)
    with pytest.raises(ImportError, match=re.escape("pip install 'funrl[onnx]'")):
        export_policy(run_dir, format="onnx")
    rc, err = _cli(capsys, run_dir, "--format", "onnx")
    assert rc == 2 and err == ("funrl export: error: format='onnx' needs the onnx extra (onnx, onnxruntime): "
                         "pip install 'funrl[onnx]'\n")
    assert not os.path.exists(os.path.join(run_dir, "policy_seed0.onnx"))


def test_cli_writes_where_asked(runs, tmp_path, capsys):
    run_dir, result = runs["dqn"]
    out = tmp_path / "sub" / "q.pt"
    assert main(["export", run_dir, "--seed", "1", "--format", "state_dict", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    d = torch.load(out, weights_only=True)
    assert d["metadata"] == {"algo": "dqn", "env": "CartPole-v1", "obs_shape": [4], "action_shape": [], "num_layers": 2,
                             "activation": "ReLU", "act_dim": 2, "head": "argmax"}
    torch.testing.assert_close(d["tensors"]["linear_0.weight"], result["state"].params["linear_0"]["weight"][1])
