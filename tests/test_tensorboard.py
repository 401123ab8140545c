"""``--tensorboard``: the event files read back with TensorBoard's own reader hold metrics.csv's rows
(the seed means and each seed's episode returns, at env steps per seed), a resumed run adds each step
once, the setting is kept on resume, and a missing package is a clear error before anything runs."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import funrl
from funrl.cli import main as cli_main
from funrl.results import load_run
from funrl.tensorboard_logger import require_tensorboard, tensorboard_scalars

TINY_KW = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))
# 8 updates of 32 env steps per seed, a checkpoint every 2 updates
RUN = dict(algo="ppo", seeds=2, total_steps=256, compile=False, progress=False, plot=False,
           checkpoint_every=2, chunk_size=1, **TINY_KW)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "run"
    funrl.run(**RUN, out=str(out), tensorboard=True)
    return out


def _read(directory) -> dict:
    """tag -> [(step, value)] as TensorBoard shows them."""
    ea = EventAccumulator(str(directory / "tensorboard"))
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _expected_from_metrics_csv(directory) -> dict:
    """tag -> [(step, value)] computed from metrics.csv: seed means (episode metrics over the seeds that
    completed an episode in the update) and each seed's return where it completed one."""
    run = load_run(str(directory))
    m, steps = {k: v.T for k, v in run["metrics"].items()}, run["env_steps"].long().tolist()  # [updates, seeds]
    done = m["episodes"].numpy() > 0
    out = {}
    for name, v in m.items():
        v = v.numpy()
        if name in ("episode_return", "episode_length"):
            out[name] = [(steps[u], v[u][done[u]].mean()) for u in range(len(steps)) if done[u].any()]
        else:
            out[name] = [(steps[u], v[u].mean()) for u in range(len(steps))]
    for s in range(done.shape[1]):
        out[f"episode_return/seed_{s}"] = [(steps[u], m["episode_return"][u, s].item())
                                           for u in range(len(steps)) if done[u, s]]
    return out


def _assert_same(got: dict, expected: dict):
    assert sorted(got) == sorted(expected)
    for tag in expected:
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
        # TensorBoard stores float32: each value is the float64 value rounded once
        g = np.array([v for _, v in got[tag]], dtype=np.float64)
        e = np.array([v for _, v in expected[tag]], dtype=np.float64)
        np.testing.assert_allclose(g, e, rtol=2.0**-23, atol=0, err_msg=tag)


def test_the_scalars_are_metrics_csvs_rows(full):
    got = _read(full)
    expected = _expected_from_metrics_csv(full)
    _assert_same(got, expected)
    # the data exercises the masking: an update where one seed completed an episode and the other did not
    done = load_run(str(full))["metrics"]["episodes"] > 0
    assert bool((done.any(0) & ~done.all(0)).any())  # [seeds, updates]
    assert [s for s, _ in got["pg_loss"]] == [32 * u for u in range(1, 9)]
    assert json.loads((full / "config.json").read_text())["tensorboard"] is True


def test_tensorboard_scalars_by_hand():
    rows = {"episode_return": [[10.0, 0.0], [0.0, 0.0], [4.0, 8.0]],  # one row per update, one column per seed
            "episode_length": [[3.0, 0.0], [0.0, 0.0], [5.0, 7.0]],
            "episodes": [[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]],
            "loss": [[1.0, 3.0], [5.0, 7.0], [0.5, 0.25]]}
    history = {k: torch.tensor(v).T for k, v in rows.items()}  # metrics are [seeds, updates]
    assert tensorboard_scalars(history, 4, 10) == [
        (50, {"episode_return": 10.0, "episode_length": 3.0, "episodes": 1.0, "loss": 2.0, "episode_return/seed_0": 10.0}),
        (60, {"episodes": 0.0, "loss": 6.0}),
        (70, {"episode_return": 6.0, "episode_length": 6.0, "episodes": 1.0, "loss": 0.375,
              "episode_return/seed_0": 4.0, "episode_return/seed_1": 8.0}),
    ]
    assert tensorboard_scalars({}, 0, 10) == []
    with pytest.raises(ValueError, match=r"history\['loss'\]: expected a tensor \[seeds, updates\].*got \(3,\)"):
        tensorboard_scalars({"episodes": torch.ones(2, 3), "loss": torch.ones(3)}, 0, 10)


def test_a_resumed_run_writes_each_step_once(full, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full, out)
    # died after logging updates 7-8, before checkpoint 8: the resumed run logs 7-8 again
    (out / "checkpoints" / "ckpt_000000000008.pt").unlink()
    (out / "summary.json").unlink()
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert result["summary"]["resumed_from_update"] == 6
    assert len(os.listdir(out / "tensorboard")) == 2  # the resumed run's own event file
    _assert_same(_read(out), _expected_from_metrics_csv(out))


def test_tensorboard_with_resume_of_a_run_without_it_is_an_error(full, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(full, out)
    (out / "summary.json").unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg["tensorboard"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="tensorboard: stored False, given True"):
        funrl.run(resume=str(out), progress=False, plot=False, tensorboard=True)
    assert cli_main(["train", "--resume", str(out), "--tensorboard", "--no-progress"]) == 2
    assert "--tensorboard: stored False, given True" in capsys.readouterr().err


def _without_tensorboard(monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError


def test_a_missing_tensorboard_package_is_a_clear_error_before_anything_runs(tmp_path, monkeypatch, capsys):
    _without_tensorboard(monkeypatch)
    with pytest.raises(ImportError, match=r"install it with: pip install 'funrl\[tensorboard\]'"):
        require_tensorboard()
    out = tmp_path / "run"
    with pytest.raises(ImportError, match=r"pip install 'funrl\[tensorboard\]'"):
        funrl.run(**RUN, out=str(out), tensorboard=True)
    assert not out.exists()
    assert cli_main(["train", "ppo", "--tensorboard", "--out", str(out), "--no-compile", "--no-progress"]) == 2
    assert "pip install 'funrl[tensorboard]'" in capsys.readouterr().err
    assert not out.exists()
