"""funrl.launch: how many processes `funrl train` uses, and the torchrun command it becomes."""

from __future__ import annotations

import sys

import pytest

from funrl.launch import MIN_SEEDS_PER_PROCESS, parse_processes, processes_for, torchrun_argv, usable_cores


def test_parse_processes():
    assert parse_processes(None) is None and parse_processes("auto") is None
    assert parse_processes("3") == 3 and parse_processes(2) == 2
    for bad in ("0", "-1", "two", "1.5", True, ""):
        with pytest.raises(ValueError, match=r"--processes: expected 'auto' or an int >= 1, got"):
            parse_processes(bad)


def test_auto_is_one_process_per_core_with_enough_seeds_each_on_cpu_only():
    env = {}
    assert MIN_SEEDS_PER_PROCESS == 16
    assert processes_for(None, 64, "cpu", environ=env, cores=2) == 2
    assert processes_for(None, 8, "cpu", environ=env, cores=2) == 1  # 4 seeds a process gain nothing (measured)
    assert processes_for(None, 32, "cpu", environ=env, cores=2) == 2
    assert processes_for(None, 31, "cpu", environ=env, cores=2) == 1
    assert processes_for(None, 64, "cpu", environ=env, cores=16) == 4  # no fewer than 16 seeds a process
    assert processes_for(None, 1024, "cpu", environ=env, cores=16) == 16
    assert processes_for(None, 64, "cpu", environ=env, cores=1) == 1
    assert processes_for(None, 64, "cpu", threads=2, environ=env, cores=4) == 2  # each process keeps its threads' cores
    assert processes_for(None, 64, "cpu", threads=4, environ=env, cores=2) == 1
    assert processes_for(None, 64, "cuda", environ=env, cores=16) == 1  # one GPU, one process


def test_requested_env_var_and_torchrun_ranks():
    assert processes_for(3, 8, "cpu", environ={}, cores=1) == 3  # asked for: the machine does not decide
    assert processes_for(None, 8, "cpu", environ={"FUNRL_PROCESSES": "1"}, cores=16) == 1
    assert processes_for(4, 8, "cpu", environ={"FUNRL_PROCESSES": "1"}, cores=16) == 4  # the flag beats the variable
    assert processes_for(None, 8, "cpu", environ={"WORLD_SIZE": "2"}, cores=16) == 1  # already a rank: never again
    with pytest.raises(ValueError, match=r"--processes: expected at most one process per seed \(3\), got 4"):
        processes_for(4, 3, "cpu", environ={}, cores=16)
    with pytest.raises(ValueError, match=r"FUNRL_PROCESSES: expected 'auto' or an int >= 1, got 'many'"):
        processes_for(None, 8, "cpu", environ={"FUNRL_PROCESSES": "many"}, cores=16)


def test_torchrun_argv_runs_funrl_as_ranks_that_do_not_relaunch():
    cmd = torchrun_argv(["train", "ppo", "--seeds", "4"], 2)
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                   "-m", "funrl", "train", "ppo", "--seeds", "4", "--processes", "1"]
    with pytest.raises(ValueError, match="processes: expected an int >= 2 to re-launch, got 1"):
        torchrun_argv(["train"], 1)


def test_usable_cores_is_positive():
    assert isinstance(usable_cores(), int) and usable_cores() >= 1
