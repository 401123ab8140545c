"""Smoke tests of the benchmark scripts: every ``benchmarks/*.py`` with a ``--quick`` flag runs and writes its JSON.

Each script runs in a subprocess at its quick size with one torch thread (the
machine is shared; oversubscribed threads make tiny workloads crawl),
``--no-compile`` where a script offers it (compiles dominate a smoke run) and a
temporary ``--out`` path, so ``benchmarks/results`` is never touched.  No
timings are asserted; the JSON's structure and its internal consistency are.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"

#: extra arguments that keep a script's quick mode small (beyond --quick, --threads 1, --out)
EXTRA_ARGS = {
    "learning.py": ["--algos", "ppo"],
    "throughput.py": ["--baseline-threads", "1"],
}


def _quick_scripts() -> list[str]:
    """Every benchmark script that offers --quick (parametrised at collection: none is skipped silently)."""
    return sorted(p.name for p in BENCH.glob("*.py") if "--quick" in p.read_text())


def _run(script: str, out: Path | None) -> subprocess.CompletedProcess:
    text = (BENCH / script).read_text()
    cmd = [sys.executable, str(BENCH / script), "--quick", *EXTRA_ARGS.get(script, [])]
    if "--threads" in text:
        cmd += ["--threads", "1"]
    if "--no-compile" in text and script not in EXTRA_ARGS:
        cmd += ["--no-compile"]  # compiles are the cost of a smoke run; ours are eager in quick mode already
    if out is not None:
        cmd += ["--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=BENCH.parent)


def _numbers(x):
    if isinstance(x, bool):
        return
    if isinstance(x, (int, float)):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _numbers(v)
    elif isinstance(x, list):
        for v in x:
            yield from _numbers(v)


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _check_throughput(result: dict) -> None:
    assert result["benchmark"] == "throughput" and result["quick"] is True
    assert result["funrl_threads_tried"] == [1] and result["machine"]["cpu_capability"]
    ppo = result["ppo"]
    base = ppo["baseline"]
    assert _finite_positive(base["sps"]) and base["threads"] == 1 and set(base["sps_by_threads"]) == {"1"}
    assert {r["seeds"] for r in ppo["rows"]} == {1, 2}
    for r in ppo["rows"]:
        assert r["mode"] in ("compiled", "eager")
        assert _finite_positive(r["sps"]) and _finite_positive(r["update_s"]) and _finite_positive(r["first_update_s"])
        steps = ppo["steps_per_update_per_seed"] * r["seeds"]
        assert r["env_steps_timed"] == steps * r["updates_timed"]
        assert r["sps"] == pytest.approx(steps / r["update_s"], rel=1e-9)
        assert r["ratio_vs_baseline"] == pytest.approx(r["sps"] / base["sps"], rel=1e-9)
        assert r["threads"] == 1 and set(r["sps_by_threads"]) == {"1"}
        # per core: each side's rate over the threads it used (both 1 here)
        assert r["per_core_ratio"] == pytest.approx(r["ratio_vs_baseline"], rel=1e-9)
    assert "main_job" not in result  # --quick leaves the end-to-end runs out
    # the quick mode is eager unless asked to compile, and reports no 64-seed target
    assert all(r["mode"] == "eager" and "compile_s" not in r for r in ppo["rows"])
    assert "target" not in ppo
    dqn = result["dqn"]
    if "skipped" not in dqn:
        assert _finite_positive(dqn["baseline"]["sps"])
        assert {r["seeds"] for r in dqn["rows"]} == {1, 2}
        for r in dqn["rows"]:
            assert r["ratio_vs_baseline"] == pytest.approx(r["sps"] / dqn["baseline"]["sps"], rel=1e-9)
    else:
        assert "dqn" in dqn["skipped"]


def _check_compile_time(result: dict) -> None:
    assert result["benchmark"] == "compile_time" and result["compiled"] is False and result["seeds"] == 2
    assert result["machine"]["cpu_capability"] and result["algo"] == "ppo"
    for cell in ("cold", "warm"):
        c = result[cell]
        assert _finite_positive(c["first_update_s"]) and _finite_positive(c["process_wall_s"])
        # PPO's pieces: the rollout step (num_steps calls), the stacking, prepare, the minibatch updates
        calls = {name: p["calls_per_update"] for name, p in c["pieces"].items()}
        assert calls == {"step": 128, "stack_steps": 1, "prepare": 1, "minibatch_update": 16}, calls
        for p in c["pieces"].values():
            assert _finite_positive(p["first_call_s"]) and _finite_positive(p["steady_call_s"])
            assert p["compile_s"] == pytest.approx(max(0.0, p["first_call_s"] - p["steady_call_s"]))


def _check_learning(result: dict) -> None:
    assert result["benchmark"] == "learning" and result["quick"] is True
    assert result["seeds"] == 2 and result["compile"] is False
    (row,) = result["rows"]
    assert row["name"] == "ppo" and row["env"] == "CartPole-v1" and row["algo"] == "ppo"
    assert row["budget_env_steps_per_seed"] == 500_000 and row["threshold"] == 490.0
    assert row["env_steps_per_seed"] == row["num_updates"] * row["config"]["num_envs"] * row["config"]["num_steps"]
    assert 1 <= row["num_updates"] <= 2
    assert len(row["per_seed_score"]) == 2
    # CartPole returns lie in [1, 500]; the IQM and its bootstrap CI are ordered
    assert all(1.0 <= s <= 500.0 for s in row["per_seed_score"])
    assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
    assert row["gap"] == pytest.approx(row["iqm"] - row["threshold"])
    assert row["met"] == (row["gap"] >= 0)
    # with two seeds nothing is trimmed: the IQM is the mean of the per-seed scores
    assert row["iqm"] == pytest.approx(sum(row["per_seed_score"]) / 2)
    assert set(row["train_return"]) >= {"iqm", "ci_low", "ci_high", "num_seeds"}
    assert _finite_positive(row["wall_s"]) and _finite_positive(row["first_update_s"])
    assert (row["name"] in result["met"]) == row["met"] and (row["name"] in result["missed"]) == (not row["met"])


def _check_transfer(result: dict) -> None:
    transfer = _load("transfer.py")
    assert result["benchmark"] == "transfer" and result["quick"] is True
    assert result["seeds"] == 2 and result["compile"] is False and result["threshold"] == 475.0
    assert result["source_pole"] == {"length": 0.5, "masspole": 0.1}
    assert result["changed_pole"] == {"length": 1.0, "masspole": 0.2}
    assert set(result["phases"]) == {"source", "finetune", "scratch"}
    for name, phase in result["phases"].items():
        steps, iqms = phase["curve"]["env_steps"], phase["curve"]["iqm"]
        # one chunk per update in quick mode, ending at the run's budget
        assert steps == [phase["steps_per_update"] * (i + 1) for i in range(len(steps))], name
        assert steps[-1] == phase["env_steps_per_seed"] == 256
        assert all(0.0 <= v <= 500.0 for v in iqms) and phase["first_chunk_iqm"] == iqms[0]
        assert phase["steps_to_threshold"] == transfer.steps_to_threshold(steps, iqms, 475.0)
        assert len(phase["per_seed_final_return"]) == 2 and phase["out"] is None
    ft, sc = result["finetune_steps_to_threshold"], result["scratch_steps_to_threshold"]
    assert ft == result["phases"]["finetune"]["steps_to_threshold"] and sc == result["phases"]["scratch"]["steps_to_threshold"]
    assert {k: result[k] for k in ("ratio", "met")} == {
        k: v for k, v in transfer.verdict(ft, sc, 256, 0.5).items() if k in ("ratio", "met")
    }
    m = result["machine"]
    assert m["cpu_model"] and m["cpu_capability"] and m["torch_threads"] == 1
    assert len(result["load_average_before"]) == 3


def _check_lm(result: dict) -> None:
    assert result["benchmark"] == "lm" and result["quick"] is True and result["task"] == "random-walks"
    assert [r["name"] for r in result["rows"]] == ["grpo", "grpo-lora"]
    for row in result["rows"]:
        assert row["seeds"] == 2 and row["updates"] == 2 + 2  # QUICK: 4 / 2 pretraining updates, 16 / 8 RL updates
        for phase in ("pretrained", "final", "greedy"):
            assert 0.0 <= row[phase]["ci_low"] <= row[phase]["iqm"] <= row[phase]["ci_high"] <= 1.0
        assert row["kl"] >= 0 and row["kl_per_sequence"] >= 0 and _finite_positive(row["wall_s"])
    full, lora = result["rows"]
    assert full["trainable_fraction"] == 1.0 and 0 < lora["trainable_fraction"] < 0.5
    assert full["trainable_params"] == full["params"] == lora["params"]
    assert {(r["cache"], r["mode"]) for r in result["sampling"]} == {(True, "eager"), (False, "eager")}
    for r in result["sampling"]:
        assert r["tokens_per_s"] == pytest.approx(r["seeds"] * r["prompts"] * r["new_tokens"] / r["call_s"], rel=1e-9)


CHECKS = {"throughput.py": _check_throughput, "learning.py": _check_learning, "transfer.py": _check_transfer,
          "lm.py": _check_lm,
          "compile_time.py": _check_compile_time}


def test_the_assigned_scripts_exist_and_offer_quick():
    scripts = _quick_scripts()
    assert "throughput.py" in scripts and "learning.py" in scripts


@pytest.mark.parametrize("script", _quick_scripts())
def test_quick_run_writes_json(script, tmp_path):
    text = (BENCH / script).read_text()
    out = tmp_path / f"{script}.json" if "--out" in text else None
    proc = _run(script, out)
    assert proc.returncode == 0, f"{script} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script} printed no table"
    if out is None:
        # a script without --out writes into benchmarks/results; the exit code is all that is checked
        return
    result = json.loads(out.read_text())
    assert isinstance(result, (dict, list)) and result, f"{script} wrote an empty JSON"
    check = CHECKS.get(script)
    if check is not None:
        check(result)
    else:
        # another helper's script: its own tests check the contents; here, that it measured something
        assert any(math.isfinite(v) and v > 0 for v in _numbers(result)), f"{script}: JSON holds no positive number"


# ---------------------------------------------------------------- argument handling (in-process, fast)
def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{script[:-3]}", BENCH / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_row_selection():
    learning = _load("learning.py")
    assert learning.select_rows("tabular") == ["q_learning", "sarsa"]
    assert learning.select_rows("PPO, ppo,dqn") == ["ppo", "dqn"]
    assert learning.select_rows("all") == list(learning.ROWS)
    assert set(learning.ROWS) >= {"ppo", "dqn", "a2c", "reinforce", "ppo-acrobot", "ddpg", "td3", "sac", "q_learning", "sarsa"}
    with pytest.raises(ValueError, match=r"--algos: unknown row 'nope'"):
        learning.select_rows("ppo,nope")


def test_bad_arguments_are_rejected(capsys):
    learning = _load("learning.py")
    with pytest.raises(SystemExit) as e:
        learning.main(["--algos", "ppo,nope"])
    assert e.value.code == 2 and "unknown row 'nope'" in capsys.readouterr().err
    for flag, value in (("--steps-scale", "0"), ("--seeds", "0"), ("--episodes", "-1"), ("--max-updates", "0")):
        with pytest.raises(SystemExit) as e:
            learning.main(["--algos", "ppo", flag, value])
        assert e.value.code == 2 and flag in capsys.readouterr().err
    throughput = _load("throughput.py")
    with pytest.raises(SystemExit) as e:
        throughput.main(["--quick", "--no-eager"])  # quick is eager-only unless --compile
    assert e.value.code == 2 and "nothing to time" in capsys.readouterr().err
    for flag, value in (("--seeds", "0,8"), ("--updates", "0"), ("--threads", "0"), ("--baseline-threads", "")):
        with pytest.raises(SystemExit) as e:
            throughput.main(["--quick", flag, value])
        assert e.value.code == 2 and flag in capsys.readouterr().err


def test_learning_keeps_the_rows_it_does_not_redo(tmp_path):
    learning = _load("learning.py")
    path = tmp_path / "learning.json"
    assert learning._earlier_rows(path, quick=False, redo=["ppo"]) == []  # no file yet
    rows = [{"name": "ppo", "iqm": 1.0}, {"name": "sac", "iqm": 2.0}]
    path.write_text(json.dumps({"benchmark": "learning", "quick": False, "rows": rows}))
    assert learning._earlier_rows(path, quick=False, redo=["ppo"]) == [{"name": "sac", "iqm": 2.0}]
    assert learning._earlier_rows(path, quick=False, redo=[]) == rows
    assert learning._earlier_rows(path, quick=True, redo=[]) == []  # a quick run never mixes with full rows
    for text in ("not json", json.dumps({"benchmark": "throughput", "rows": []})):
        path.write_text(text)
        with pytest.raises(SystemExit, match="not a learning.py JSON.*--fresh"):
            learning._earlier_rows(path, quick=False, redo=[])


def test_transfer_metric_pieces():
    transfer = _load("transfer.py")
    steps = [100, 200, 300, 400]
    assert transfer.steps_to_threshold(steps, [10.0, 474.9, 475.0, 500.0], 475.0) == 300
    assert transfer.steps_to_threshold(steps, [10.0, 20.0, 30.0, 40.0], 475.0) is None
    assert transfer.verdict(100, 400, 1000, 0.5) == {"ratio": 0.25, "met": True}
    assert transfer.verdict(300, 400, 1000, 0.5) == {"ratio": 0.75, "met": False}
    assert transfer.verdict(None, 400, 1000, 0.5)["met"] is False
    # scratch never got there: met when fine-tuning needed at most half the budget
    assert transfer.verdict(500, None, 1000, 0.5)["met"] is True
    assert transfer.verdict(501, None, 1000, 0.5)["met"] is False
    # per-chunk IQM: episode-weighted mean per seed, a seed without episodes counts 0, IQM over seeds
    import torch

    ret = torch.tensor([[100.0, 10.0, 0.0, 50.0], [300.0, 30.0, 0.0, 50.0], [500.0, 20.0, 0.0, 50.0]])
    eps = torch.tensor([[1.0, 1.0, 0.0, 2.0], [3.0, 1.0, 0.0, 2.0], [1.0, 2.0, 0.0, 2.0]])
    # written one update per row; funrl.run's metrics are [seeds, updates]
    s, iqm = transfer.iqm_curve({"episode_return": ret.T, "episodes": eps.T}, chunk=2, steps_per_update=64)
    assert s == [128, 192]
    # chunk 1 per seed: (100*1 + 300*3)/4 = 250, 20, 0, 50; chunk 2: 500, 20, 0, 50.
    # The IQM of 4 values is the mean of the middle two: (20 + 50)/2 both times.
    assert iqm == [pytest.approx(35.0), pytest.approx(35.0)]
