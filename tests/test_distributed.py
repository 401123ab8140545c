"""Seeds sharded across torch.distributed processes: the helpers, and torchrun end to end.

The end-to-end tests launch ``python -m torch.distributed.run --standalone``
(gloo on CPU, a free port picked by the OS) on tiny eager PPO runs and compare
with one single-process run of the same flags, bit for bit: metrics.csv, the
final checkpoint (state and metrics history) and summary.json.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from funrl import checkpoint as ckpt
from funrl import distributed, tree
from funrl.cli import main as cli_main
from helpers import TINY_PPO_ARGS

TINY = [*TINY_PPO_ARGS, "--no-compile", "--no-plot", "--no-progress"]
# 3 seeds over 2 ranks is the uneven split 2 + 1; 4 updates of 32 steps, checkpoints at updates 2 and 4
TRAIN = ["train", "ppo", "--seeds", "3", "--total-steps", "128", "--checkpoint-every", "2", *TINY]


# ---------------------------------------------------------------- seed_block
@given(num_seeds=st.integers(0, 300), world_size=st.integers(1, 40))
def test_seed_blocks_cover_every_seed_once_in_order_and_balanced(num_seeds, world_size):
    blocks = [distributed.seed_block(num_seeds, r, world_size) for r in range(world_size)]
    assert distributed.seed_blocks(num_seeds, world_size) == blocks
    seeds = [s for start, count in blocks for s in range(start, start + count)]
    assert seeds == list(range(num_seeds))  # contiguous, in rank order, each seed once
    next_start = 0
    for start, count in blocks:
        assert start == next_start and count >= 0
        next_start = start + count
    counts = [c for _, c in blocks]
    assert max(counts) - min(counts) <= 1
    assert counts == sorted(counts, reverse=True)  # the larger blocks come first


def test_seed_block_examples():
    assert distributed.seed_blocks(5, 2) == [(0, 3), (3, 2)]
    assert distributed.seed_blocks(16, 4) == [(0, 4), (4, 4), (8, 4), (12, 4)]
    assert distributed.seed_blocks(2, 3) == [(0, 1), (1, 1), (2, 0)]
    assert distributed.seed_block(7, 0, 1) == (0, 7)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((-1, 0, 2), ValueError, "num_seeds: expected an int >= 0, got -1"),
        ((4, 0, 0), ValueError, "world_size: expected an int >= 1, got 0"),
        ((4, -1, 2), ValueError, "rank: expected an int >= 0, got -1"),
        ((4, 2, 2), ValueError, r"rank: expected an int in \[0, world_size=2\), got 2"),
        ((4.0, 0, 2), TypeError, "num_seeds: expected an int, got float 4.0"),
        ((4, 0, True), TypeError, "world_size: expected an int, got bool True"),
        ((4, "1", 2), TypeError, "rank: expected an int, got str '1'"),
    ],
)
def test_seed_block_rejects_bad_input_naming_the_argument(args, error, message):
    with pytest.raises(error, match=message):
        distributed.seed_block(*args)


# ---------------------------------------------------------------- environment parsing
def test_world_reads_torchrun_variables():
    assert distributed.world({}) == distributed.World(0, 1, 0)
    assert not distributed.world({"WORLD_SIZE": "1", "RANK": "0"}).distributed
    w = distributed.world({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert w == (3, 4, 1) and w.distributed and not w.main
    assert distributed.world({"WORLD_SIZE": "2", "RANK": "0"}).local_rank == 0
    for env, message in [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE: expected an int, got 'two'"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE: expected an int >= 1, got 0"),
        ({"WORLD_SIZE": "2"}, "RANK: expected an int in the environment"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK: expected an int in \[0, 2\), got 2"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK: expected an int >= 0, got -1"),
    ]:
        with pytest.raises(ValueError, match=message):
            distributed.world(env)


def test_timeout_and_failure_hook_parsing():
    assert distributed.timeout({}) == datetime.timedelta(seconds=300)
    assert distributed.timeout({"FUNRL_DIST_TIMEOUT_S": "2.5"}) == datetime.timedelta(seconds=2.5)
    for bad in ["0", "-1", "soon", "inf", "nan"]:
        with pytest.raises(ValueError, match=f"FUNRL_DIST_TIMEOUT_S: expected a number of seconds > 0, got '{bad}'"):
            distributed.timeout({"FUNRL_DIST_TIMEOUT_S": bad})
    w1 = distributed.World(1, 2, 1)
    assert distributed.fail_after_update(w1, {}) is None
    assert distributed.fail_after_update(w1, {"FUNRL_TEST_FAIL_RANK": "1"}) == 0
    assert distributed.fail_after_update(w1, {"FUNRL_TEST_FAIL_RANK": "1:7"}) == 7
    assert distributed.fail_after_update(w1, {"FUNRL_TEST_FAIL_RANK": "0:7"}) is None
    with pytest.raises(ValueError, match="FUNRL_TEST_FAIL_RANK: expected R or R:U"):
        distributed.fail_after_update(w1, {"FUNRL_TEST_FAIL_RANK": "one"})


def test_local_device_and_backend():
    w = distributed.World(1, 2, 1)
    assert distributed.local_device("cpu", w) == "cpu"
    assert distributed.local_device("cuda", distributed.World()) == "cuda"  # single process: as given
    with pytest.raises(ValueError, match=r"device: under torchrun pass 'cuda' .* got 'cuda:0'"):
        distributed.local_device("cuda:0", w)
    with pytest.raises(TypeError, match="device: expected a str"):
        distributed.local_device(torch.device("cpu"), w)
    if torch.cuda.device_count() < 2:
        with pytest.raises(ValueError, match="device: rank 1 needs cuda:1"):
            distributed.local_device("cuda", w)
    assert distributed.backend(False) == "gloo"
    assert distributed.backend(True) == "cpu:gloo,cuda:nccl"
    with pytest.raises(ValueError, match="w: expected a World with world_size > 1"):
        distributed.init(distributed.World())


def test_failure_hook_is_composed_in_only_when_its_variable_names_this_rank():
    calls = []

    def callback(state, info):
        calls.append(info.update)

    w0 = distributed.World()
    assert distributed.with_failure_hook(callback, w0, {}) is callback
    assert distributed.with_failure_hook(callback, w0, {"FUNRL_TEST_FAIL_RANK": "1:3"}) is callback  # another rank
    hooked = distributed.with_failure_hook(callback, w0, {"FUNRL_TEST_FAIL_RANK": "0:3"})
    hooked(None, SimpleNamespace(update=2))
    with pytest.raises(RuntimeError, match=r"FUNRL_TEST_FAIL_RANK=0:3: rank 0 raising after update 4 \(testing hook\)"):
        hooked(None, SimpleNamespace(update=4))
    assert calls == [2, 4]  # the run's own callback ran first, every time
    with pytest.raises(ValueError, match="FUNRL_TEST_FAIL_RANK: expected R or R:U"):
        distributed.with_failure_hook(callback, w0, {"FUNRL_TEST_FAIL_RANK": "x"})


def test_context_of_a_single_process_is_local_and_exchanges_nothing():
    with distributed.context({}) as ctx:
        assert isinstance(ctx, distributed.Local)
        assert ctx.world == distributed.World() and ctx.world.main
        t = {"w": torch.arange(6.0).reshape(3, 2)}
        assert ctx.gather_seeds(t) is t
        assert ctx.scatter_blocks(t, [(0, 3)]) is t
        assert ctx.broadcast("runs/x") == "runs/x"
        assert ctx.on_main(lambda: 7) == 7 and ctx.on_main(lambda: 8, broadcast=False) == 8
        ctx.raise_if_any_failed(None)
        with pytest.raises(KeyError, match="boom"):
            ctx.raise_if_any_failed(KeyError("boom"))
        with pytest.raises(ZeroDivisionError):
            ctx.on_main(lambda: 1 / 0)
    with pytest.raises(ValueError, match="RANK: expected an int"):
        with distributed.context({"WORLD_SIZE": "2"}):
            pass


def test_rank_failed_names_every_failed_rank():
    e = distributed.RankFailed({2: "ValueError: x", 1: "RuntimeError: boom"}, rank=0)
    assert str(e) == "rank 1 failed: RuntimeError: boom; rank 2 failed: ValueError: x"
    assert e.rank == 0 and set(e.failures) == {1, 2}


# ---------------------------------------------------------------- torchrun end to end
def _torchrun(nproc: int, *args, env_extra=None, timeout=240, relaunch=False) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node=nproc -m funrl ARGS``; ``relaunch``: ``funrl ARGS --processes nproc`` instead
    (funrl.launch: the CLI re-launches itself under torchrun)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "FUNRL_TEST_FAIL_RANK")}
    # one thread per rank: 2 ranks share 2 cores, and the single-process reference runs with one thread too
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", FUNRL_DIST_TIMEOUT_S="120", **(env_extra or {}))
    if relaunch:
        cmd = [sys.executable, "-m", "funrl", *args, "--processes", str(nproc)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "funrl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _final(directory) -> tuple[int, dict]:
    step, saved, _ = ckpt.CheckpointManager(os.path.join(directory, "checkpoints")).load()
    return step, saved


def _summary(directory) -> dict:
    s = json.loads((directory / "summary.json").read_text())
    for timing in ("wall_time_s", "sps", "processes", "resumed_from_update"):
        s.pop(timing)
    return s


def _assert_same_results(a, b):
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    step_a, saved_a = _final(a)
    step_b, saved_b = _final(b)
    assert step_a == step_b == 4
    assert tree.equal(saved_a["state"], saved_b["state"])  # params, optimiser, envs, keys: bit for bit
    assert tree.equal(saved_a["history"], saved_b["history"])
    assert _summary(a) == _summary(b)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: one process, all 3 seeds (in-process: the CLI's own code path, one torch thread)."""
    out = tmp_path_factory.mktemp("single") / "run"
    assert cli_main([*TRAIN, "--out", str(out)]) == 0
    return out


def test_two_ranks_equal_one_process_bit_for_bit(single, tmp_path):
    out = tmp_path / "two"
    # `funrl train --processes 2` re-launches itself under torchrun (what it does by default on 2 cores)
    proc = _check(_torchrun(2, *TRAIN, "--out", str(out), relaunch=True))
    assert proc.stdout.startswith("funrl train: seeds split over 2 processes")
    assert proc.stdout.count("final return: IQM") == 1  # rank 0 reports for the job
    assert "2 processes x 1 torch thread" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == 3 and cfg["processes"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and len(summary["per_seed_final_return"]) == 3
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt_000000000002.pt", "ckpt_000000000004.pt"]
    step, saved = _final(out)
    assert all(x.shape[0] == 3 for x in tree.leaves(saved["state"]))  # one checkpoint, every seed
    _assert_same_results(single, out)

    # resume the 2-rank folder from its first checkpoint under 3 ranks (one seed each): same end state
    three = tmp_path / "three"
    shutil.copytree(out, three)
    (three / "checkpoints" / "ckpt_000000000004.pt").unlink()
    (three / "summary.json").unlink()
    _check(_torchrun(3, "train", "--resume", str(three), "--no-plot", "--no-progress"))
    assert json.loads((three / "summary.json").read_text())["resumed_from_update"] == 2
    _assert_same_results(single, three)


def test_two_ranks_warm_start_equals_one_process_bit_for_bit(single, tmp_path):
    # rank 0 reads the source folder and hands each rank its block of seeds' params
    warm = ["--init", str(single), "--freeze", r"^critic\.linear_0\.", "--env-set", "length=1.0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli_main([*TRAIN, *warm, "--out", str(one)]) == 0
    _check(_torchrun(2, *TRAIN, *warm, "--out", str(two)))
    _assert_same_results(one, two)
    _, source = _final(single)
    _, tuned = _final(two)
    assert tree.equal(tuned["state"].params["critic"]["linear_0"], source["state"].params["critic"]["linear_0"])
    assert json.loads((two / "config.json").read_text())["init"]["dir"] == str(single.resolve())


def test_a_failed_rank_stops_the_job_and_the_run_resumes(single, tmp_path):
    out = tmp_path / "fail"
    # rank 1 raises in the chunk that reaches update 3 (updates 3-4), after checkpoint 2 was written
    proc = _torchrun(2, *TRAIN, "--out", str(out), env_extra={"FUNRL_TEST_FAIL_RANK": "1:3"})
    assert proc.returncode != 0
    assert "funrl: rank 1 failed: RuntimeError: FUNRL_TEST_FAIL_RANK=1:3" in proc.stderr
    assert "funrl: rank 0 stopping: rank 1 failed" in proc.stderr
    assert not (out / "summary.json").exists()  # no partial run presented as complete
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt_000000000002.pt"]
    assert {int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]} == {1, 2}

    # a single process continues from the last checkpoint and reaches the uninterrupted result
    assert cli_main(["train", "--resume", str(out), "--no-plot", "--no-progress"]) == 0
    _assert_same_results(single, out)


def test_more_processes_than_seeds_is_a_clear_error(tmp_path):
    proc = _torchrun(2, "train", "ppo", "--seeds", "1", "--total-steps", "64", *TINY, "--out", str(tmp_path / "x"))
    assert proc.returncode != 0  # each rank exits 2; torchrun reports the job's failure as 1
    assert "seeds: expected at least one seed per process (2 processes), got 1" in proc.stderr
