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
    assert result["funrl_threads"] == 1
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


CHECKS = {"throughput.py": _check_throughput, "learning.py": _check_learning}


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
