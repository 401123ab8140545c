"""funrl.results: the results folder's files, written and read back, with hand-computed expectations."""

import json
import os

import pytest
import torch

from funrl import checkpoint as ckpt
from funrl import results


def _metrics():
    """Two seeds, three updates: ``[S=2, U=3]``."""
    return {"episode_return": torch.tensor([[1.5, 2.5, 3.5], [-1.0, 0.25, 8.0]]),
            "episodes": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])}


def test_metrics_csv_text_is_update_major_with_env_steps():
    text = results.metrics_csv_text({"a": torch.tensor([[1.5, 2.5], [3.5, 4.5]])}, steps_per_update=10, first_update=3)
    assert text == ("update,seed,env_steps,a\r\n"
                    "4,0,40,1.5\r\n4,1,40,3.5\r\n"
                    "5,0,50,2.5\r\n5,1,50,4.5\r\n")
    assert results.metrics_csv_text({"a": torch.zeros(2, 1)}, 10, header=False) == "1,0,10,0.0\r\n1,1,10,0.0\r\n"


def test_metrics_csv_appends_restores_and_load_run_reads_seeds_by_updates(tmp_path):
    m = _metrics()
    results.write_config_json(str(tmp_path), {"algo": "ppo", "env": "CartPole-v1", "seeds": 2, "seed": 0, "config": {}})
    w = results.MetricsCSV(str(tmp_path / "metrics.csv"), 32)
    w.append({k: v[:, :1] for k, v in m.items()}, 0)
    w.append({k: v[:, 1:] for k, v in m.items()}, 1)
    loaded = results.load_run(str(tmp_path))
    assert loaded["summary"] is None
    assert loaded["env_steps"].tolist() == [32.0, 64.0, 96.0]
    for k, v in m.items():
        assert loaded["metrics"][k].shape == (2, 3) and torch.equal(loaded["metrics"][k], v.double()), k

    # rows a crash left after the newest checkpoint (update 3), and a torn line: restore drops them
    with open(tmp_path / "metrics.csv", "ab") as f:
        f.write(b"4,0,128,9.0,1.0\r\n4,1")
    segment = {k: v[:, 2:] for k, v in m.items()}  # the checkpoint at update 3 holds update 3's metrics
    whole = results.MetricsCSV(str(tmp_path / "metrics.csv"), 32).restore(2, segment)
    assert all(torch.equal(whole[k], m[k]) for k in m)
    assert (tmp_path / "metrics.csv").read_bytes().decode() == results.metrics_csv_text(m, 32)


def test_metrics_csv_restore_names_the_missing_rows(tmp_path):
    w = results.MetricsCSV(str(tmp_path / "metrics.csv"), 32)
    w.append({k: v[:, :1] for k, v in _metrics().items()}, 0)
    with pytest.raises(ValueError, match=r"metrics\.csv: expected the rows of updates 1\.\.2 for 2 seeds .*found 2 rows"):
        w.restore(2, {k: v[:, 2:] for k, v in _metrics().items()})


def test_concat_metrics_joins_along_updates_and_skips_empty_parts():
    m = _metrics()
    joined = results.concat_metrics([None, {k: v[:, :2] for k, v in m.items()}, {}, {k: v[:, 2:] for k, v in m.items()}])
    assert all(torch.equal(joined[k], m[k]) for k in m)
    assert results.concat_metrics([None, {}]) == {}


def test_final_returns_averages_the_last_updates_with_episodes():
    U = 40  # window: ceil(5% of 40) = the last 2 updates
    ret = torch.zeros(3, U)
    eps = torch.zeros(3, U)
    ret[0, -2:], eps[0, -2:] = torch.tensor([10.0, 20.0]), 1.0
    ret[1, -2:], eps[1, -2:] = torch.tensor([7.0, 99.0]), torch.tensor([1.0, 0.0])  # 99: no episode ended there
    ret[2, -3], eps[2, -3] = 50.0, 1.0  # outside the window
    out = results.final_returns({"episode_return": ret, "episodes": eps})
    assert out.dtype == torch.float64 and out.tolist() == [15.0, 7.0, 0.0]


def test_config_json_written_with_versions_and_read_back(tmp_path):
    record = {"algo": "ppo", "env": "CartPole-v1", "seeds": 2, "seed": 0, "config": {"gamma": 0.99}}
    path = results.write_config_json(str(tmp_path), record)
    cfg = results.read_config_json(path)
    assert {k: cfg[k] for k in record} == record
    assert set(cfg["versions"]) == {"funrl", "torch", "python"} and "cpus" in cfg["machine"]
    with pytest.raises(ValueError, match=r"record: missing key\(s\) 'seed', 'config'"):
        results.write_config_json(str(tmp_path), {"algo": "ppo", "env": "x", "seeds": 1})
    (tmp_path / "config.json").write_text(json.dumps({"algo": "ppo"}))
    with pytest.raises(ValueError, match=r"config\.json: missing key\(s\) 'env', 'seeds', 'seed', 'config'"):
        results.read_config_json(str(tmp_path / "config.json"))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        results.read_config_json(str(tmp_path / "config.json"))


def test_summary_json_round_trip_and_none_before_the_end(tmp_path):
    assert results.read_summary_json(str(tmp_path)) is None
    results.write_summary_json(str(tmp_path), {"iqm": 1.5, "seeds": 2})
    assert results.read_summary_json(str(tmp_path)) == {"iqm": 1.5, "seeds": 2}


def test_checkpoints_hold_seeds_by_updates_and_older_ones_are_transposed(tmp_path):
    m = _metrics()
    manager = ckpt.CheckpointManager(str(tmp_path / "checkpoints"), keep=2)
    csv_file = results.MetricsCSV(str(tmp_path / "metrics.csv"), 32)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint to resume from"):
        results.read_checkpoint(manager)
    state = {"w": torch.arange(4.0)}
    results.write_checkpoint(manager, csv_file, 2, state, {k: v[:, :2] for k, v in m.items()}, 0)
    results.write_checkpoint(manager, csv_file, 3, state, {k: v[:, 2:] for k, v in m.items()}, 2)
    assert (tmp_path / "metrics.csv").read_bytes().decode() == results.metrics_csv_text(m, 32)  # rows first, then the file
    update, saved_state, (first, segment) = results.read_checkpoint(manager)
    assert (update, first) == (3, 2) and torch.equal(saved_state["w"], state["w"])
    assert all(torch.equal(segment[k], m[k][:, 2:]) for k in m)

    # before metrics_axes: [updates, seeds], and before history_from: the whole history
    ckpt.save(manager.path(4), {"state": state, "history": {k: v.T.contiguous() for k, v in m.items()}},
              metadata={"update": 4})
    update, _, (first, segment) = results.read_checkpoint(manager)
    assert (update, first) == (4, 0)
    assert all(segment[k].shape == (2, 3) and torch.equal(segment[k], m[k]) for k in m)


def test_clean_temp_files_removes_only_interrupted_results_writes(tmp_path):
    ours = [".metrics.csv.abc.tmp", ".summary.json.1.tmp", ".config.json.z.tmp", ".learning_curve.png.q.tmp"]
    theirs = ["notes.tmp", ".metrics.csv", "metrics.csv.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    results.clean_temp_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)
    results.clean_temp_files(str(tmp_path / "absent"))  # no folder: nothing to do


def test_curve_with_ci_takes_seeds_by_updates():
    from funrl.plotting import curve_with_ci

    r = torch.tensor([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]]).numpy()  # [S=3, U=2]; under 4 seeds the IQM is the mean
    center, low, high = curve_with_ci(r, num_resamples=200)
    assert center.tolist() == [3.0, 20.0]
    assert (low <= center).all() and (center <= high).all() and low[0] >= 1.0 and high[1] <= 30.0
    one = curve_with_ci(r[:1])
    assert [x.tolist() for x in one] == [[1.0, 10.0]] * 3
    with pytest.raises(ValueError, match=r"returns: expected shape \[seeds, updates\]"):
        curve_with_ci(r[0])


def test_plot_runs_draws_a_results_folder(tmp_path):
    from funrl.plotting import plot_runs

    results.write_config_json(str(tmp_path), {"algo": "ppo", "env": "CartPole-v1", "seeds": 2, "seed": 0, "config": {}})
    results.MetricsCSV(str(tmp_path / "metrics.csv"), 32).append(_metrics(), 0)
    out = plot_runs([str(tmp_path)], str(tmp_path / "curve.png"))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"metric: 'loss' is not in .*columns: \['episode_return', 'episodes'\]"):
        plot_runs([str(tmp_path)], str(tmp_path / "x.png"), metric="loss")
