"""Sweeps (funrl.sweeps, ``funrl train --sweep``, ``funrl.run(sweep=...)``): grid, seed order, results, resume, plot."""

import json
import os

import numpy as np
import pytest
import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import cli, sweeps, tree
from funrl.algorithms import ppo
from funrl.algorithms import parse_value
from helpers import TINY_PPO_ARGS

TINY_KW = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))
STEPS = 128  # 4 updates of 2 envs x 16 steps
LRS = ("1e-3", "3e-3")


def _final(directory):
    step, saved, _ = ckpt.CheckpointManager(os.path.join(directory, "checkpoints")).load()
    return step, saved["state"]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A CLI sweep run: 2 learning rates x 2 seeds, checkpoints at updates 2 and 4; its folder and stdout."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["train", "ppo", "--sweep", f"learning_rate={','.join(LRS)}", "--seeds", "2",
                       "--total-steps", str(STEPS), "--no-compile", "--checkpoint-every", "2", "--out", str(out),
                       *TINY_PPO_ARGS])
    assert rc == 0
    return out, buf.getvalue()


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """``funrl.run`` without a sweep: 4 seeds (the sweep's total), every one at the second learning rate."""
    out = tmp_path_factory.mktemp("plain") / "run"
    funrl.run("ppo", seeds=4, total_steps=STEPS, out=str(out), compile=False, progress=False, plot=False,
              checkpoint_every=2, learning_rate=float(LRS[1]), **TINY_KW)
    return out


# ------------------------------------------------------------------ the grid, by hand
def test_grid_order_seed_order_and_record_by_hand():
    grid = {"a": [1.0, 2.0], "b": [10.0, 20.0, 30.0]}
    assert sweeps.expand_grid(grid) == [
        {"a": 1.0, "b": 10.0}, {"a": 1.0, "b": 20.0}, {"a": 1.0, "b": 30.0},
        {"a": 2.0, "b": 10.0}, {"a": 2.0, "b": 20.0}, {"a": 2.0, "b": 30.0},
    ]  # the first name varies slowest
    hp = sweeps.sweep_hparams(grid, seeds=2)  # setting-major: seeds 2k, 2k+1 are setting k
    assert hp == {"a": [1.0] * 6 + [2.0] * 6, "b": [10.0, 10.0, 20.0, 20.0, 30.0, 30.0] * 2}
    rec = sweeps.sweep_record(grid, 2)
    assert rec["seeds_per_setting"] == 2 and rec["grid"] == grid
    assert [s["seeds"] for s in rec["settings"]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert rec["settings"][4]["values"] == {"a": 2.0, "b": 20.0}
    assert sweeps.describe(rec) == "6 settings x 2 seeds" and sweeps.describe(None) == ""
    assert sweeps.setting_label({"learning_rate": 0.0003, "gamma": 0.99}) == "learning_rate=0.0003, gamma=0.99"
    assert sweeps.setting_groups({"seeds": 12, "sweep": rec}) == rec["settings"]
    assert sweeps.setting_groups({"seeds": 4}) is None
    with pytest.raises(ValueError, match="6 settings x 2 seeds, but the run has 8 seeds"):
        sweeps.setting_groups({"seeds": 8, "sweep": rec})
    with pytest.raises(ValueError, match=r"grid\['b'\]: expected a non-empty list"):
        sweeps.expand_grid({"a": [1.0], "b": []})


def test_parse_sweep_args_and_same_grid():
    assert sweeps.parse_sweep_args(["learning-rate=1e-4, 3e-4", "gamma=0.9"]) == {
        "learning_rate": ["1e-4", "3e-4"], "gamma": ["0.9"]}
    with pytest.raises(ValueError, match="--sweep: expected NAME=V1,V2"):
        sweeps.parse_sweep_args(["gamma"])
    with pytest.raises(ValueError, match="at least one value"):
        sweeps.parse_sweep_args(["gamma=,"])
    with pytest.raises(ValueError, match="--sweep gamma: given twice"):
        sweeps.parse_sweep_args(["gamma=0.9", "gamma=0.99"])
    rec = sweeps.sweep_record({"learning_rate": [1e-4, 3e-4]}, 2)
    assert sweeps.same_grid(rec, {"learning_rate": ["1e-4", "0.0003"]})
    assert not sweeps.same_grid(rec, {"learning_rate": ["1e-4"]})
    assert not sweeps.same_grid(rec, {"gamma": [1e-4, 3e-4]})
    assert not sweeps.same_grid(None, {"learning_rate": [1e-4]}) and sweeps.same_grid(None, None)


def test_check_sweep_and_plan():
    config = ppo.Config()
    total, hp, rec = sweeps.plan(ppo, config, {"gamma": ["0.9", 0.99]}, 3, parse=parse_value)
    assert total == 6 and hp == {"gamma": [0.9, 0.9, 0.9, 0.99, 0.99, 0.99]} and rec["grid"] == {"gamma": [0.9, 0.99]}
    with pytest.raises(ValueError, match="seeds: expected an int >= 1"):
        sweeps.plan(ppo, config, {"gamma": [0.9]}, 0)
    with pytest.raises(ValueError, match="sweep gamma: expected numbers, got the string '0.9'"):
        sweeps.check_sweep(ppo, config, {"gamma": ["0.9"]})  # no parser given
    with pytest.raises(ValueError, match="sweep gamma: expected finite real numbers, got True"):
        sweeps.check_sweep(ppo, config, {"gamma": [True]})
    with pytest.raises(ValueError, match="cannot be combined with hparams"):
        sweeps.check_sweep(ppo, config, {"gamma": [0.9]}, hparams={"gamma": [0.9]})
    with pytest.raises(ValueError, match=r"sweep\['gamma'\]: got 1.5, outside the valid range"):
        sweeps.check_sweep(ppo, config, {"gamma": [0.9, 1.5]})
    sweeps.check_single_values(ppo, {"learning_rate": "1e-4", "hidden_sizes": "8,8"})  # one value each: fine


def test_summarize_settings_by_hand():
    rec = sweeps.sweep_record({"x": [1.0, 2.0]}, 4)
    rows = sweeps.summarize_settings(torch.tensor([4.0, 1.0, 3.0, 2.0, 10.0, 40.0, 20.0, 30.0]), rec)
    assert [r["values"] for r in rows] == [{"x": 1.0}, {"x": 2.0}]
    assert [r["seeds"] for r in rows] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # IQM of 4 scores: drop the lowest and the highest, average the middle two
    assert rows[0]["iqm"] == 2.5 and rows[1]["iqm"] == 25.0
    assert rows[0]["per_seed_final_return"] == [4.0, 1.0, 3.0, 2.0] and rows[1]["mean"] == 25.0
    assert rows[1]["ci_low"] <= rows[1]["iqm"] <= rows[1]["ci_high"] and rows[1]["num_seeds"] == 4


# ------------------------------------------------------------------ a sweep run
def test_cli_sweep_writes_groups_and_per_setting_lines(sweep_run):
    out, stdout = sweep_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == 4
    assert cfg["sweep"]["grid"] == {"learning_rate": [1e-3, 3e-3]} and cfg["sweep"]["seeds_per_setting"] == 2
    # each seed got its setting's value (stored as the float32 the run used), setting-major
    f32 = [torch.tensor(float(v), dtype=torch.float32).item() for v in LRS]
    assert cfg["hparams"] == {"learning_rate": [f32[0], f32[0], f32[1], f32[1]]}
    s = json.loads((out / "summary.json").read_text())
    for k in ("iqm", "ci_low", "ci_high", "mean", "per_seed_final_return", "sps", "seeds"):
        assert k in s  # the overall keys stay
    assert len(s["per_seed_final_return"]) == 4
    assert [g["values"] for g in s["settings"]] == [{"learning_rate": 1e-3}, {"learning_rate": 3e-3}]
    assert [g["seeds"] for g in s["settings"]] == [[0, 1], [2, 3]]
    for k, g in enumerate(s["settings"]):
        mine = s["per_seed_final_return"][2 * k: 2 * k + 2]
        assert g["per_seed_final_return"] == mine
        assert g["iqm"] == pytest.approx(sum(mine) / 2, abs=1e-12)  # 2 scores: nothing trimmed
        assert g["ci_low"] <= g["iqm"] <= g["ci_high"]
    assert "4 seeds (2 settings x 2 seeds)" in stdout
    assert "  learning_rate=0.001 (seeds 0..1): IQM" in stdout and "  learning_rate=0.003 (seeds 2..3): IQM" in stdout
    # progress: the sweep is named and its steps are summed over every seed
    assert "[ppo/CartPole-v1 sweep of 2 settings x 2 seeds]" in stdout and "summed over 4 seeds" in stdout


@pytest.mark.exactness
def test_a_settings_seed_is_a_plain_run_of_its_value_bit_for_bit(sweep_run, plain_run):
    """Setting 1's first seed is global seed 2: ``fold_in(key(0), 2)`` at learning rate 3e-3.

    The plain run trains 4 seeds (the same batch) all at 3e-3; its seed 2 has the same key and value.
    """
    out, _ = sweep_run
    step, swept = _final(out)
    step_plain, plain = _final(plain_run)
    assert step == step_plain == 4
    assert tree.equal(tree.index(swept, 2), tree.index(plain, 2))
    # and the value mattered: the sweep's seed 0 (1e-3) is not the plain run's seed 0 (3e-3)
    first = tree.leaves(swept.params)[0]
    assert not torch.equal(first[0], tree.leaves(plain.params)[0][0])


def test_resume_keeps_the_grid(sweep_run, tmp_path, capsys):
    out, _ = sweep_run
    step, full = _final(out)
    # an interrupted copy: the newest checkpoint and summary.json gone
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    os.remove(cut / "checkpoints" / "ckpt_000000000004.pt")
    os.remove(cut / "summary.json")
    # the same grid (as strings) and seeds per setting agree with the stored run
    rc = cli.main(["train", "--resume", str(cut), "--seeds", "2", "--sweep", f"learning_rate={','.join(LRS)}",
                   "--no-progress", "--no-plot"])
    assert rc == 0
    assert "  learning_rate=0.003 (seeds 2..3): IQM" in capsys.readouterr().out
    _, resumed = _final(cut)
    assert tree.equal(resumed, full)
    assert json.loads((cut / "summary.json").read_text())["settings"] == \
        json.loads((out / "summary.json").read_text())["settings"]
    assert json.loads((cut / "config.json").read_text())["sweep"] == json.loads((out / "config.json").read_text())["sweep"]
    # another grid, or the total seed count, would change the run
    for extra, message in ((["--sweep", "learning_rate=1e-3"], "--sweep: stored {'learning_rate': [0.001, 0.003]}"),
                           (["--seeds", "4"], "--seeds: stored 2, given 4")):
        assert cli.main(["train", "--resume", str(cut), *extra]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "hidden_sizes=8,16"], "--sweep hidden_sizes: not batchable; ppo can sweep only its batchable "
                                           "hyper-parameters (learning_rate, gamma, gae_lambda, clip_coef, ent_coef, "
                                           "vf_coef)"),
        (["--sweep", "learning_rat=1e-3"], "--sweep learning_rat: not a ppo config field (did you mean learning_rate?)"),
        (["--sweep", "learning_rate=1e-3,1e-4", "--set", "learning_rate=1e-3"],
         "--sweep learning_rate: also given as --set (learning_rate='1e-3')"),
        (["--sweep", "learning_rate=1e-3,fast"], "--sweep learning_rate: config.learning_rate: expected a float, got 'fast'"),
        (["--sweep", "gamma=0.9,1.5"], "--sweep['gamma']: got 1.5, outside the valid range"),
        (["--set", "learning_rate=1e-4,3e-4"], "use --sweep learning_rate=1e-4,3e-4 for several values"),
    ],
)
def test_bad_sweeps_fail_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert cli.main(["train", "ppo", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_python_api_rejects_what_the_cli_rejects(tmp_path):
    kw = dict(seeds=1, total_steps=512, out=str(tmp_path / "x"), compile=False, progress=False, plot=False)
    with pytest.raises(ValueError, match="sweep hidden_sizes: not batchable.*change array shapes"):
        funrl.run("ppo", sweep={"hidden_sizes": [(8,), (16,)]}, **kw)
    with pytest.raises(ValueError, match="sweep learning_rate: also given as a Config keyword argument"):
        funrl.run("ppo", sweep={"learning_rate": [1e-3, 1e-4]}, learning_rate=1e-3, **kw)
    with pytest.raises(ValueError, match="cannot be combined with hparams"):
        funrl.run("ppo", sweep={"learning_rate": [1e-3]}, hparams={"gamma": [0.9]}, **kw)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ plot
def test_plot_draws_one_curve_per_setting(sweep_run, plain_run, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from funrl.plotting import learning_curves
    from funrl.results import load_run

    out, _ = sweep_run
    curves = learning_curves([str(out)])
    assert [c["values"] for c in curves] == [{"learning_rate": 1e-3}, {"learning_rate": 3e-3}]
    assert [c["seeds"] for c in curves] == [[0, 1], [2, 3]]
    # the last point of each curve, by hand: each seed's last finished episode, averaged (2 seeds: IQM = mean)
    m = load_run(str(out))["metrics"]
    for c in curves:
        last = []
        for s in c["seeds"]:
            done = torch.nonzero(m["episodes"][s] > 0).flatten()  # [seeds, updates]
            last.append(float(m["episode_return"][s, done[-1]]))
        assert c["iqm"][-1] == pytest.approx(np.mean(last), abs=1e-12)

    drawn = []
    original = Axes.plot

    def recording_plot(self, *a, **k):
        drawn.append(k.get("label"))
        return original(self, *a, **k)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    png = tmp_path / "curves.png"
    assert cli.main(["plot", str(out), str(plain_run), "--out", str(png)]) == 0
    assert drawn == [
        "ppo learning_rate=0.001 (2 seeds) — run",
        "ppo learning_rate=0.003 (2 seeds) — run",
        "ppo (4 seeds) — run",  # a plain run beside it keeps its one curve
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
