"""funrl.threads: one torch thread per run by default, --threads / threads= to change it, restored afterwards."""

from __future__ import annotations

import json

import pytest
import torch

import funrl
from funrl.threads import check_threads, default_threads, using_threads


@pytest.mark.parametrize("env_value, expected", [(None, 1), ("3", 3), (" 2 ", 2), ("0", 1), ("many", 1), ("", 1)])
def test_default_is_one_thread_unless_omp_num_threads_says_otherwise(monkeypatch, env_value, expected):
    if env_value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env_value)
    assert default_threads() == expected
    assert check_threads(None) == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_named(bad):
    with pytest.raises(ValueError, match=r"threads: expected an int >= 1 .* got"):
        check_threads(bad)
    with pytest.raises(ValueError, match=r"--threads: expected an int >= 1"):
        check_threads(bad, "--threads")


def test_using_threads_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    with using_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with using_threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_run_trains_with_the_chosen_threads_records_them_and_restores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []
    real = funrl.runner._run

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(funrl.runner, "_run", spy)
    before = torch.get_num_threads()
    common = dict(seeds=1, total_steps=32, compile=False, progress=False, plot=False, num_envs=2, num_steps=16,
                  num_minibatches=2, update_epochs=1, hidden_sizes=(8,))
    r = funrl.run("ppo", out=str(tmp_path / "a"), threads=2, **common)
    assert seen == [2] and r["threads"] == 2 and r["summary"]["threads"] == 2
    assert torch.get_num_threads() == before
    r = funrl.run("ppo", out=str(tmp_path / "b"), **common)
    assert seen == [2, 1] and r["summary"]["threads"] == 1
    assert json.load(open(tmp_path / "b" / "summary.json"))["threads"] == 1
    with pytest.raises(ValueError, match="threads: expected an int >= 1"):
        funrl.run("ppo", out=str(tmp_path / "c"), threads=0, **common)
    assert not (tmp_path / "c").exists()
