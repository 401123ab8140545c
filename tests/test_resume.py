"""Resume keeps its word: stored settings are restored, conflicting arguments are errors, a finished
run is left alone, unsafe checkpoint files are refused, and metrics.csv is appended, not rewritten,
yet equals an uninterrupted run's byte for byte."""

import json
import os
import shutil

import pytest
import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import tree
from funrl.algorithms.common import Driver
from funrl.cli import main as cli_main
from funrl.results import METRICS_AXES, MetricsCSV, load_run, metrics_csv_text

TINY_KW = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))
# 8 updates of 32 env steps, a checkpoint every 2 updates (kept: the newest 2), a chunk per update
RUN = dict(algo="ppo", seeds=2, total_steps=256, compile=False, progress=False, plot=False,
           checkpoint_every=2, chunk_size=1, **TINY_KW)
FAIL = "FUNRL_TEST_FAIL_RANK"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run: ``(folder, result)``."""
    out = tmp_path_factory.mktemp("full") / "run"
    return out, funrl.run(**RUN, out=str(out))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run stopped by an error after update 3: checkpoint 2, metrics.csv rows 1..2, no summary."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    os.environ[FAIL] = "0:3"
    try:
        with pytest.raises(RuntimeError, match=FAIL):
            funrl.run(**RUN, out=str(out))
    finally:
        del os.environ[FAIL]
    assert ckpt.CheckpointManager(out / "checkpoints").steps() == [2]
    assert not (out / "summary.json").exists()
    return out


def _copy(src, tmp_path, name="run"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _snapshot(directory) -> dict:
    """Every file under ``directory``: relative path -> (bytes, mtime)."""
    snap = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                snap[os.path.relpath(p, directory)] = (fh.read(), os.stat(p).st_mtime_ns)
    return snap


def _final(directory):
    step, saved, meta = ckpt.CheckpointManager(os.path.join(directory, "checkpoints")).load()
    return step, saved, meta


def _assert_same_run(a, b):
    """Same final checkpoint state (bit for bit) and the same metrics.csv (byte for byte)."""
    step_a, saved_a, _ = _final(a)
    step_b, saved_b, _ = _final(b)
    assert step_a == step_b == 8
    assert tree.equal(saved_a["state"], saved_b["state"])
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()


def _record_saves_and_chunks(monkeypatch):
    saves, chunks = [], []
    real_save, real_run = ckpt.CheckpointManager.save, Driver.run

    def save(self, step, *a, **k):
        saves.append(step)
        return real_save(self, step, *a, **k)

    def run(self, *a, **k):
        chunks.append(k.get("chunk_size"))
        return real_run(self, *a, **k)

    monkeypatch.setattr(ckpt.CheckpointManager, "save", save)
    monkeypatch.setattr(Driver, "run", run)
    return saves, chunks


# ------------------------------------------------------------------ a. stored checkpoint_every and chunk_size
def test_resume_keeps_checkpoint_every_and_chunk_size(full, interrupted, tmp_path, monkeypatch):
    out = _copy(interrupted, tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["checkpoint_every"] == 2 and cfg["chunk_size"] == 1
    saves, chunks = _record_saves_and_chunks(monkeypatch)
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert saves == [4, 6, 8]  # every 2 updates, as the run started (not the default 50)
    assert set(chunks) == {1}
    assert result["summary"]["resumed_from_update"] == 2
    _assert_same_run(full[0], out)
    assert tree.equal(result["metrics"], full[1]["metrics"])  # the whole history, dtypes included


def test_resume_of_a_config_json_without_them_uses_the_defaults(full, interrupted, tmp_path, monkeypatch):
    out = _copy(interrupted, tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["checkpoint_every"], cfg["chunk_size"]  # written before they were recorded
    (out / "config.json").write_text(json.dumps(cfg))
    saves, chunks = _record_saves_and_chunks(monkeypatch)
    funrl.run(resume=str(out), progress=False, plot=False)
    assert saves == [8] and set(chunks) == {10}
    _assert_same_run(full[0], out)


# ------------------------------------------------------------------ b. conflicting arguments
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(total_steps=512), "total_steps: stored 256, given 512"),
        (dict(seeds=3), "seeds: stored 2, given 3"),
        (dict(seed=1), "seed: stored 0, given 1"),
        (dict(env="Acrobot-v1"), "env: stored 'CartPole-v1', given 'Acrobot-v1'"),
        (dict(algo="dqn"), "algo: stored 'ppo', given 'dqn'"),
        (dict(checkpoint_every=5), "checkpoint_every: stored 2, given 5"),
        (dict(chunk_size=3), "chunk_size: stored 1, given 3"),
        (dict(device="cuda"), "device: stored 'cpu', given 'cuda'"),
        (dict(init="somewhere"), "init: stored None"),
        (dict(env_params={"length": 1.0}), "env_params['length']: stored None, given 1.0"),
        (dict(learning_rate=0.5), "config.learning_rate: stored 0.00025, given 0.5"),
        (dict(freeze="^actor"), "config.freeze"),
    ],
)
def test_python_resume_with_a_conflicting_argument_is_an_error(interrupted, tmp_path, kwargs, name):
    out = _copy(interrupted, tmp_path)
    before = _snapshot(out)
    with pytest.raises(ValueError, match="resume: .*config.json records a run these arguments would change") as e:
        funrl.run(resume=str(out), progress=False, plot=False, **kwargs)
    assert name in str(e.value)
    assert _snapshot(out) == before


def test_python_resume_with_the_stored_values_is_fine(full, interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    funrl.run(resume=str(out), out="ignored", **{**RUN, "progress": False})
    _assert_same_run(full[0], out)
    assert not os.path.exists("ignored")


@pytest.mark.parametrize(
    "flags, shown",
    [
        (["--total-steps", "512"], "--total-steps: stored 256, given 512"),
        (["--seeds", "8"], "--seeds: stored 2, given 8"),  # 8 is run()'s default: given on the command line, it counts
        (["--checkpoint-every", "50"], "--checkpoint-every: stored 2, given 50"),
        (["--seed", "3"], "--seed: stored 0, given 3"),
        (["--set", "learning_rate=0.5"], "--set learning_rate: stored 0.00025, given '0.5'"),
        (["--env", "Acrobot-v1"], "--env: stored 'CartPole-v1'"),
        (["--task", "Acrobot-v1"], "--env: stored 'CartPole-v1'"),
        (["dqn"], "ALGO: stored 'ppo', given 'dqn'"),
        (["--init", "elsewhere"], "--init: stored None"),
        (["--env-set", "length=1.0"], "--env-set length: stored None, given 1.0"),
        (["--freeze", "^actor"], "--freeze: stored '', given '^actor'"),
        (["--device", "cuda"], "--device: stored 'cpu', given 'cuda'"),
        (["--lora", "4"], "lora_rank"),  # ppo has no lora_rank field: named as the unknown field
    ],
)
def test_cli_resume_with_a_conflicting_flag_is_an_error(interrupted, tmp_path, capsys, flags, shown):
    out = _copy(interrupted, tmp_path)
    before = _snapshot(out)
    assert cli_main(["train", *flags, "--resume", str(out), "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "funrl train: error: " in err and shown in err, err
    assert _snapshot(out) == before


def test_cli_no_compile_conflicts_with_a_compiled_run(interrupted, tmp_path, capsys):
    out = _copy(interrupted, tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    cfg["compile"] = True
    (out / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(out)
    assert cli_main(["train", "--no-compile", "--resume", str(out), "--no-progress"]) == 2
    assert "--no-compile: stored True, given False" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_cli_resume_with_flags_equal_to_the_stored_run_is_fine(full, interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    flags = ["ppo", "--seeds", "2", "--total-steps", "256", "--no-compile", "--checkpoint-every", "2", "--seed", "0",
             "--set", "num_envs=2", "--device", "cpu"]
    assert cli_main(["train", *flags, "--resume", str(out), "--no-progress", "--no-plot"]) == 0
    _assert_same_run(full[0], out)


# ------------------------------------------------------------------ c. a finished run
def test_resume_of_a_finished_run_changes_nothing(full, tmp_path, capsys):
    out = _copy(full[0], tmp_path)
    before = _snapshot(out)
    assert cli_main(["train", "--resume", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "the run is already finished" in printed and "nothing changed" in printed
    assert _snapshot(out) == before
    result = funrl.run(resume=str(out), progress=False)
    assert result["finished"] is True
    assert result["summary"] == json.loads((out / "summary.json").read_text())
    assert tree.equal(result["metrics"], full[1]["metrics"])
    assert tree.equal(result["state"], full[1]["state"])
    assert _snapshot(out) == before


def test_resume_after_the_last_checkpoint_without_a_summary_finishes_the_run(full, tmp_path):
    out = _copy(full[0], tmp_path)
    (out / "summary.json").unlink()
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert "finished" not in result and (out / "summary.json").exists()
    assert result["summary"]["iqm"] == full[1]["summary"]["iqm"]


# ------------------------------------------------------------------ e. unsafe files, temp files
class _WritesMarker:
    """Unpickling this object calls ``open(path, "w")``: the marker file appears."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_object_as_the_newest_checkpoint_is_refused_and_never_run(full, interrupted, tmp_path):
    # the payload is live: an unguarded unpickle creates the marker
    probe = tmp_path / "probe.pt"
    torch.save({"format": ckpt.FORMAT, "tree": _WritesMarker(tmp_path / "probe-marker")}, probe)
    torch.load(probe, weights_only=False)
    assert (tmp_path / "probe-marker").exists()

    out = _copy(interrupted, tmp_path)
    marker = tmp_path / "marker"
    evil = out / "checkpoints" / "ckpt_000000000006.pt"
    torch.save({"format": ckpt.FORMAT, "version": 1, "tree": _WritesMarker(marker)}, evil)
    with pytest.warns(ckpt.CheckpointWarning, match=r"ckpt_000000000006\.pt.*refused by the weights_only unpickler"):
        result = funrl.run(resume=str(out), progress=False, plot=False)
    assert not marker.exists()
    assert result["summary"]["resumed_from_update"] == 2  # from the older good checkpoint
    _assert_same_run(full[0], out)
    assert ckpt.CheckpointManager(out / "checkpoints").steps() == [6, 8]  # the evil file was overwritten


def test_resume_removes_temp_files_of_interrupted_writes(interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    temps = [out / ".metrics.csv.abc123.tmp", out / ".summary.json.x1.tmp",
             out / "checkpoints" / ".ckpt_000000000004.pt.q9z.tmp"]
    for t in temps:
        t.write_bytes(b"half a write")
    (out / "notes.tmp").write_text("not ours")
    funrl.run(resume=str(out), progress=False, plot=False)
    assert not any(t.exists() for t in temps)
    assert (out / "notes.tmp").exists()


# ------------------------------------------------------------------ 2. metrics.csv appended, checkpoints hold the new rows
def test_checkpoints_hold_only_the_metrics_since_the_previous_one(full):
    out, result = full
    step, saved, meta = _final(out)
    assert step == 8 and meta == {"update": 8, "history_from": 6, "metrics_axes": METRICS_AXES}
    assert tree.equal(saved["history"], {k: v[:, 6:] for k, v in result["metrics"].items()})  # [seeds, updates]
    loaded = load_run(str(out))
    for k, v in result["metrics"].items():
        assert torch.equal(loaded["metrics"][k], v.double()), k
    assert loaded["env_steps"].tolist() == [32.0 * (u + 1) for u in range(8)]


def test_metrics_csv_is_appended_not_rewritten(full, tmp_path):
    history = full[1]["metrics"]
    path = tmp_path / "metrics.csv"
    path.write_text("stale file of an earlier run\n")
    w = MetricsCSV(str(path), 32)
    w.append({k: v[:, :3] for k, v in history.items()}, 0)  # the first write replaces the file
    inode = os.stat(path).st_ino
    w.append({k: v[:, 3:5] for k, v in history.items()}, 3)
    w.append({k: v[:, 5:] for k, v in history.items()}, 5)
    assert os.stat(path).st_ino == inode  # appended in place, not replaced
    assert path.read_bytes().decode() == metrics_csv_text(history, 32)
    assert path.read_bytes() == (full[0] / "metrics.csv").read_bytes()


def test_rows_after_the_newest_checkpoint_and_a_torn_line_are_dropped_on_resume(full, tmp_path):
    out = _copy(full[0], tmp_path)
    (out / "checkpoints" / "ckpt_000000000008.pt").unlink()  # died after appending rows 7-8, before checkpoint 8
    (out / "summary.json").unlink()
    with open(out / "metrics.csv", "ab") as f:
        f.write(b"9,0,288,12.5")  # and a torn line
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert result["summary"]["resumed_from_update"] == 6
    _assert_same_run(full[0], out)
    assert tree.equal(result["metrics"], full[1]["metrics"])


def test_an_old_checkpoint_with_the_whole_history_still_resumes(full, tmp_path):
    out = _copy(full[0], tmp_path)
    manager = ckpt.CheckpointManager(out / "checkpoints")
    _, saved, _ = manager.load(6)
    # the format before: the whole history in every checkpoint, [updates, seeds], metrics.csv rewritten each time
    ckpt.save(manager.path(6), {"state": saved["state"], "history": {k: v[:, :6].T.contiguous() for k, v in full[1]["metrics"].items()}},
              metadata={"update": 6})
    os.remove(manager.path(8))
    (out / "summary.json").unlink()
    lines = (out / "metrics.csv").read_bytes().decode().splitlines(keepends=True)
    (out / "metrics.csv").write_bytes("".join(lines[:4]).encode())  # whatever it holds, the checkpoint rules
    funrl.run(resume=str(out), progress=False, plot=False)
    _assert_same_run(full[0], out)


def test_a_checkpoint_with_metrics_updates_first_still_resumes(full, tmp_path):
    out = _copy(full[0], tmp_path)
    manager = ckpt.CheckpointManager(out / "checkpoints")
    _, saved, meta = manager.load(6)
    assert meta["metrics_axes"] == "seed,update"
    # the format before metrics_axes: the segment since the previous checkpoint as [updates, seeds]
    segment = {k: v[:, 4:6].T.contiguous() for k, v in full[1]["metrics"].items()}
    ckpt.save(manager.path(6), {"state": saved["state"], "history": segment}, metadata={"update": 6, "history_from": 4})
    os.remove(manager.path(8))
    (out / "summary.json").unlink()
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert result["summary"]["resumed_from_update"] == 6
    _assert_same_run(full[0], out)
    assert tree.equal(result["metrics"], full[1]["metrics"])


def test_metrics_csv_missing_rows_the_checkpoint_needs_is_a_clear_error(full, tmp_path):
    out = _copy(full[0], tmp_path)
    (out / "checkpoints" / "ckpt_000000000008.pt").unlink()
    (out / "summary.json").unlink()
    lines = (out / "metrics.csv").read_bytes().decode().splitlines(keepends=True)
    (out / "metrics.csv").write_bytes("".join(lines[:5]).encode())  # rows of updates 1-2 only
    with pytest.raises(ValueError, match=r"metrics\.csv: expected the rows of updates 1\.\.4 for 2 seeds .*found 4 rows"):
        funrl.run(resume=str(out), progress=False, plot=False)


# ------------------------------------------------------------------ compiled resume
def test_compiled_resume_after_an_interruption_is_bit_identical(tmp_path):
    kw = {**RUN, "compile": True}
    full_dir = tmp_path / "full"
    funrl.run(**kw, out=str(full_dir))
    out = _copy(full_dir, tmp_path, "resumed")
    (out / "checkpoints" / "ckpt_000000000008.pt").unlink()  # killed between checkpoint 6 and 8
    (out / "summary.json").unlink()
    assert json.loads((out / "config.json").read_text())["compile"] is True
    result = funrl.run(resume=str(out), progress=False, plot=False)
    assert result["summary"]["resumed_from_update"] == 6
    _assert_same_run(full_dir, out)
