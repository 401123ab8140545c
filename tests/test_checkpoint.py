"""Tests for funrl.checkpoint: bit-exact roundtrips, atomic writes, corruption and
unsafe-file detection, rolling checkpoints with fallback, atomic results files."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import warnings
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pytest
import torch

import funrl.random as fr
from funrl import checkpoint as ckpt
from funrl.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointWarning,
    load,
    load_latest,
    save,
    save_latest,
    write_json_atomic,
    write_text_atomic,
)
from funrl.distributions import Normal
from funrl.tree import pytree_dataclass


class AdamState(NamedTuple):
    count: torch.Tensor
    mu: dict
    nu: dict


@pytree_dataclass(static_fields=("num_envs",))
class EnvState:
    obs: torch.Tensor
    t: torch.Tensor
    num_envs: int


@dataclasses.dataclass
class PlainDataclass:
    x: torch.Tensor


class Unsafe:
    """A custom class: pickling it into a file is what load must refuse."""

    def __init__(self):
        self.payload = "would run arbitrary code on unpickle"


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _assert_same(a, b, where="tree"):
    assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad, where
        assert torch.equal(_bits(a), _bits(b)), f"{where}: tensor bits differ"
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def _example_tree():
    big = torch.arange(100_000, dtype=torch.float32)
    special = torch.tensor([float("nan"), -0.0, float("inf"), 1e-45, -3.5], dtype=torch.float32)
    return {
        "params": {"w": torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4), "b": special},
        "opt": AdamState(
            count=torch.tensor(7, dtype=torch.int32),
            mu={"w": torch.zeros(3, 4)},
            nu={"w": torch.full((3, 4), 0.25, dtype=torch.bfloat16)},
        ),
        "env": EnvState(obs=torch.ones(4, 2), t=torch.tensor([1, 2, 3, 4]), num_envs=4),
        "key": fr.split(fr.key(2**40 + 3))[1],  # int64 funrl key
        "done": torch.tensor([True, False, True]),
        "policy": Normal(torch.zeros(2), torch.ones(2)),
        "transposed": torch.arange(6.0).reshape(2, 3).t(),
        "view": big[10:13],
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float16),
        "grad": torch.ones(2, requires_grad=True),
        3: ["text", 1, 2.5, True, None, (torch.int8, torch.device("cpu"), torch.Size([2, 3]))],
        ("tuple", 1): OrderedDict([("z", 1), ("a", torch.tensor([9]))]),
        "empty_containers": ([], (), {}),
    }


# ------------------------------------------------------------------ roundtrip
def test_roundtrip_is_bit_exact_and_keeps_container_types(tmp_path):
    tree = _example_tree()
    meta = {"step": 1234, "config": {"lr": 3e-4, "env": "CartPole-v1"}, "seeds": (0, 1, 2)}
    path = save(tmp_path / "c.pt", tree, meta)
    assert path == str(tmp_path / "c.pt")
    loaded, loaded_meta = load(path)
    _assert_same(tree, loaded)
    _assert_same(meta, loaded_meta)
    assert isinstance(loaded["policy"], Normal) and isinstance(loaded["env"], EnvState)
    assert loaded["env"].num_envs == 4
    # a small view of a big buffer is not stored with the whole buffer
    assert os.path.getsize(path) < 100_000
    # the file is a plain weights_only payload
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == ckpt.FORMAT and raw["version"] == ckpt.VERSION
    # numpy scalars and int subclasses are stored as plain Python values
    save(tmp_path / "n.pt", {"a": np.float64(0.5), np.int64(3): np.bool_(True), "e": torch.float32.itemsize})
    assert load(tmp_path / "n.pt")[0] == {"a": 0.5, 3: True, "e": 4}
    assert [type(v) for v in load(tmp_path / "n.pt")[0].values()] == [float, bool, int]
    # default metadata and map_location
    save(tmp_path / "d.pt", [torch.ones(1)])
    t, m = load(tmp_path / "d.pt", map_location="cpu")
    assert m is None and torch.equal(t[0], torch.ones(1))


def test_file_mode_follows_umask(tmp_path):
    save(tmp_path / "c.pt", {"x": torch.ones(1)})
    with open(tmp_path / "plain", "w"):
        pass
    assert os.stat(tmp_path / "c.pt").st_mode == os.stat(tmp_path / "plain").st_mode


def test_unsupported_trees_raise_type_error_naming_the_position(tmp_path):
    with pytest.raises(TypeError, match=r"tree\['a'\]\[1\].*object"):
        save(tmp_path / "c.pt", {"a": [1, object()]})

    class Local(NamedTuple):
        x: torch.Tensor

    with pytest.raises(TypeError, match="Local.*module level"):
        save(tmp_path / "c.pt", {"a": Local(torch.ones(1))})
    with pytest.raises(TypeError, match="register_dataclass"):
        save(tmp_path / "c.pt", PlainDataclass(torch.ones(1)))
    with pytest.raises(TypeError, match="keys cannot be tensors"):
        save(tmp_path / "c.pt", {(1, torch.ones(1)): 1})
    with pytest.raises(TypeError, match="path"):
        save(3, {})
    assert os.listdir(tmp_path) == []  # nothing written for a refused tree


# ---------------------------------------------------------------- atomicity
def test_crash_before_replace_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save(path, {"v": torch.tensor([1.0])})

    def crash(*args, **kwargs):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save(path, {"v": torch.tensor([2.0])})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.pt"]
    assert torch.equal(load(path)[0]["v"], torch.tensor([1.0]))


def test_crash_during_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save(path, {"v": torch.tensor([1.0])})
    real_save = torch.save

    def partial_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # even a BaseException cleans up

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(KeyboardInterrupt):
        save(path, {"v": torch.tensor([2.0])})
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(tmp_path) == ["c.pt"]
    assert torch.equal(load(path)[0]["v"], torch.tensor([1.0]))


# ---------------------------------------------------------- corrupt / unsafe
def test_truncated_and_garbage_files_raise_checkpoint_error_naming_the_file(tmp_path):
    good = tmp_path / "good.pt"
    save(good, _example_tree())
    data = good.read_bytes()
    for n in (0, 1, 64, len(data) // 3, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"trunc{n}.pt"
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=str(bad)):
            load(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load(garbage)
    assert issubclass(CheckpointError, ValueError)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load(tmp_path / "missing.pt")


def test_flipped_tensor_byte_is_detected_by_checksum(tmp_path):
    path = tmp_path / "c.pt"
    marker = torch.tensor([0x1234567890ABCDEF] * 4, dtype=torch.int64)
    save(path, {"w": marker, "b": torch.ones(3)})
    data = bytearray(path.read_bytes())
    pos = bytes(data).find(_bits(marker).numpy().tobytes())
    assert pos > 0
    data[pos + 9] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load(path)


def test_pickled_arbitrary_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"tree": Unsafe(), "format": ckpt.FORMAT}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused.*weights_only"):
        load(path)
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.ones(1)}, plain)
    with pytest.raises(CheckpointError, match="not a funrl checkpoint"):
        load(plain)


def _forge(path, tree_enc, meta_enc=None, tensors=(), version=ckpt.VERSION):
    tensors = list(tensors)
    torch.save(
        {
            "format": ckpt.FORMAT,
            "version": version,
            "tree": tree_enc,
            "metadata": meta_enc,
            "tensors": tensors,
            "sha256": ckpt._digest(tree_enc, meta_enc, tensors),
        },
        path,
    )


def test_forged_type_paths_are_never_called_or_imported(tmp_path):
    p = tmp_path / "f.pt"
    _forge(p, {"k": "namedtuple", "type": "os:system", "fields": ["command"], "items": ["echo pwned"]})
    with pytest.raises(CheckpointError, match="os:system is not a NamedTuple"):
        load(p)
    _forge(p, {"k": "node", "type": "builtins:eval", "context": None, "children": ["1"]})
    with pytest.raises(CheckpointError, match="not a registered pytree node"):
        load(p)
    name = "funrl_test_module_that_must_not_be_imported"
    _forge(p, {"k": "namedtuple", "type": f"{name}:T", "fields": [], "items": []})
    with pytest.raises(CheckpointError, match="not imported"):
        load(p)
    assert name not in sys.modules
    _forge(p, {"k": "T", "i": 5})
    with pytest.raises(CheckpointError, match="out of range"):
        load(p)
    _forge(p, {"k": "list", "items": []}, version=ckpt.VERSION + 1)
    with pytest.raises(CheckpointError, match="newer"):
        load(p)
    # a NamedTuple whose fields changed since the file was written
    _forge(p, {"k": "namedtuple", "type": f"{__name__}:AdamState", "fields": ["count"], "items": [1]})
    with pytest.raises(CheckpointError, match="fields"):
        load(p)


# --------------------------------------------------------- rolling checkpoints
def test_manager_keeps_last_and_loads_latest(tmp_path):
    m = CheckpointManager(tmp_path / "run", keep=2)
    assert m.steps() == [] and m.latest_step() is None
    for step in (100, 200, 300):
        m.save(step, {"w": torch.tensor([float(step)])}, {"step": step})
    assert m.steps() == [200, 300]
    assert sorted(os.listdir(tmp_path / "run")) == ["ckpt_000000000200.pt", "ckpt_000000000300.pt"]
    step, tree, meta = m.load()
    assert step == 300 and meta == {"step": 300} and torch.equal(tree["w"], torch.tensor([300.0]))
    assert m.load(200)[0] == 200
    # a smaller step is kept (never delete the file just written)
    m.save(50, {"w": torch.tensor([50.0])})
    assert m.steps() == [50, 300]
    s, t, _ = load_latest(tmp_path / "run")
    assert s == 300
    save_latest(tmp_path / "run2", 7, {"x": torch.ones(1)}, keep=1)
    save_latest(tmp_path / "run2", 8, {"x": torch.zeros(1)}, keep=1)
    assert CheckpointManager(tmp_path / "run2").steps() == [8]


def test_load_latest_falls_back_to_previous_good_checkpoint(tmp_path):
    d = tmp_path / "run"
    save_latest(d, 1, {"w": torch.tensor([1.0])})
    newest = save_latest(d, 2, {"w": torch.tensor([2.0])})
    with open(newest, "r+b") as f:  # disk trouble after the fact
        f.truncate(os.path.getsize(newest) // 2)
    with pytest.warns(CheckpointWarning, match="ckpt_000000000002.pt"):
        step, tree, _ = load_latest(d)
    assert step == 1 and torch.equal(tree["w"], torch.tensor([1.0]))
    with pytest.raises(CheckpointError, match="ckpt_000000000002.pt"):
        CheckpointManager(d).load(2)
    older = CheckpointManager(d).path(1)
    with open(older, "wb") as f:
        f.write(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)
        with pytest.raises(CheckpointError, match="no usable checkpoint.*000002.*000001"):
            load_latest(d)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_latest(tmp_path / "empty")


def test_crash_while_saving_keeps_previous_checkpoints(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(1, {"w": torch.tensor([1.0])})
    m.save(2, {"w": torch.tensor([2.0])})
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        m.save(3, {"w": torch.tensor([3.0])})
    monkeypatch.undo()
    assert m.steps() == [1, 2] and len(os.listdir(tmp_path)) == 2
    assert m.load()[0] == 2


def test_manager_bad_arguments():
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager("/tmp/x", keep=0)
    with pytest.raises(ValueError, match="prefix"):
        CheckpointManager("/tmp/x", prefix="a/b")
    with pytest.raises(ValueError, match="step"):
        CheckpointManager("/tmp/x").path(-1)
    with pytest.raises(TypeError, match="directory"):
        CheckpointManager(None)


# ------------------------------------------------------------- results files
def test_write_json_and_text_atomic(tmp_path, monkeypatch):
    p = tmp_path / "sub" / "results.json"
    obj = {"iqm": np.float64(1.5), "returns": torch.tensor([1.0, 2.0]), "seeds": np.arange(3), "n": 3}
    assert write_json_atomic(p, obj) == str(p)
    assert json.loads(p.read_text()) == {"iqm": 1.5, "returns": [1.0, 2.0], "seeds": [0, 1, 2], "n": 3}
    assert p.read_text().endswith("\n")
    with pytest.raises(ValueError):
        write_json_atomic(p, {"x": float("nan")}, allow_nan=False)
    with pytest.raises(TypeError, match="object"):
        write_json_atomic(p, {"x": object()})
    assert json.loads(p.read_text())["n"] == 3  # failed writes left the old file
    t = tmp_path / "notes.txt"
    write_text_atomic(t, "first")
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        write_text_atomic(t, "second")
    monkeypatch.undo()
    assert t.read_text() == "first" and sorted(os.listdir(tmp_path)) == ["notes.txt", "sub"]
    with pytest.raises(TypeError, match="text"):
        write_text_atomic(t, b"bytes")


# ------------------------------------------------------------- retention: only good checkpoints count
def test_unusable_and_foreign_files_never_push_a_good_checkpoint_out(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(1, {"w": torch.tensor([1.0])})
    m.save(2, {"w": torch.tensor([2.0])})
    # newer-numbered files that are not usable checkpoints: junk, a plain torch.save, a pickled object
    (tmp_path / "ckpt_000000000005.pt").write_bytes(b"junk")
    torch.save({"a": torch.ones(1)}, tmp_path / "ckpt_000000000004.pt")
    torch.save({"format": ckpt.FORMAT, "tree": Unsafe()}, tmp_path / "ckpt_000000000009.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    m.save(3, {"w": torch.tensor([3.0])})
    # the newest two good ones are 3 and 2 (the old rule kept 9, 5 or 4 and deleted 2); newer unusable files stay
    assert m.steps() == [2, 3, 4, 5, 9]
    m.save(6, {"w": torch.tensor([6.0])})
    # unusable files older than a fresh good checkpoint are deleted; other files are never touched
    assert m.steps() == [3, 6, 9]
    assert (tmp_path / "notes.txt").exists()
    with pytest.warns(CheckpointWarning, match="ckpt_000000000009.pt"):
        assert m.load()[0] == 6
    # a fresh manager (a new process) verifies what it did not write
    m2 = CheckpointManager(tmp_path, keep=2)
    m2.save(7, {"w": torch.tensor([7.0])})
    assert m2.steps() == [6, 7, 9]


def test_a_checkpoint_corrupted_after_it_was_written_does_not_count(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(1, {"w": torch.tensor([1.0])})
    m.save(2, {"w": torch.tensor([2.0])})
    with open(m.path(2), "r+b") as f:  # bit rot after the fact
        f.truncate(os.path.getsize(m.path(2)) // 2)
    m.save(3, {"w": torch.tensor([3.0])})
    assert m.steps() == [1, 3]  # the last good older one stays; the corrupt one goes
    assert m.load(1)[1]["w"].item() == 1.0


def test_keep_one_never_deletes_the_last_good_checkpoint_for_a_bad_one(tmp_path):
    m = CheckpointManager(tmp_path, keep=1)
    m.save(4, {"w": torch.tensor([4.0])})
    (tmp_path / "ckpt_000000000008.pt").write_bytes(b"torn")
    m.save(5, {"w": torch.tensor([5.0])})
    assert m.steps() == [5, 8]
    with pytest.warns(CheckpointWarning):
        assert m.load()[0] == 5


def test_temp_files_of_an_interrupted_write_are_removed_on_the_next_save(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(1, {"w": torch.tensor([1.0])})
    stray = [tmp_path / ".ckpt_000000000002.pt.k2j3h4.tmp", tmp_path / ".ckpt_000000000001.pt.abc.tmp"]
    for p in stray:
        p.write_bytes(b"half a checkpoint")
    others = [tmp_path / ".other.pt.x.tmp", tmp_path / ".ckpt_1.txt.tmp", tmp_path / "keep.tmp"]
    for p in others:
        p.write_bytes(b"not ours")
    m.save(2, {"w": torch.tensor([2.0])})
    assert not any(p.exists() for p in stray)
    assert all(p.exists() for p in others)
    stray[0].write_bytes(b"again")
    assert m.clean_temp() == [str(stray[0])]
    assert m.steps() == [1, 2]


def test_interrupted_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path, monkeypatch):
    m = CheckpointManager(tmp_path, keep=2)
    m.save(1, {"w": torch.tensor([1.0])})
    # a hard kill between writing the temp file and the rename: the cleanup in _atomic_write never runs
    monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed")))
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)
    with pytest.raises(SystemExit):
        m.save(2, {"w": torch.tensor([2.0])})
    monkeypatch.undo()
    temps = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".ckpt_000000000002.pt.")
    m.save(2, {"w": torch.tensor([2.0])})
    assert sorted(os.listdir(tmp_path)) == ["ckpt_000000000001.pt", "ckpt_000000000002.pt"]
