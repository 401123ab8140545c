"""No host-device synchronisation inside a training chunk, for every algorithm.

On CUDA, ``.item()``, ``bool(tensor)``, ``if tensor:``, ``torch.equal``,
``nonzero`` and boolean-mask indexing wait for the GPU to finish (and stop the
CPU from queueing the next kernels).  A chunk of ``Driver.run`` must queue its
updates without one; the progress line and checkpoints read values between
chunks.  Those operations all reach the dispatcher as the aten ops below, so a
``TorchDispatchMode`` that records them catches them on the CPU too, where this
test runs.  (Inside ``vmap`` and ``fullgraph`` compiles they raise anyway; what
this guards is the Python glue between the compiled pieces: update loops,
schedules, buffer bookkeeping, metric collection.)
"""

from __future__ import annotations

import traceback

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import funrl
from funrl import random as jr
from funrl.algorithms import DEFAULT_ENVS, get, list_algorithms
from funrl.algorithms.common import Driver
from helpers import TINY

#: aten ops whose result the host must wait for (they copy a value or a data-dependent shape to the CPU)
SYNCING_OPS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), float(t), int(t), bool(t) of a 1-element tensor
    torch.ops.aten.is_nonzero.default,  # bool(t), if t:
    torch.ops.aten.equal.default,  # torch.equal
    torch.ops.aten.nonzero.default,  # nonzero, boolean-mask indexing, where(cond) with one argument
    torch.ops.aten.masked_select.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_consecutive.default,
}
#: indexing ops that sync when an index is a boolean mask (the mask's nonzero runs inside the kernel)
MASK_INDEXING_OPS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default}


def _syncs(func, args) -> bool:
    if func in SYNCING_OPS:
        return True
    if func in MASK_INDEXING_OPS and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])
    return False


class RecordSyncs(TorchDispatchMode):
    """Records every syncing op with the innermost funrl frame that called it."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.num_ops = 0  # every op seen: proves the mode saw the work (vmap included)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.num_ops += 1
        if _syncs(func, args):
            frames = [f for f in traceback.extract_stack() if "/funrl/" in f.filename.replace("\\", "/")]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "outside funrl"
            self.calls.append(f"{func} at {where}")
        return func(*args, **(kwargs or {}))


def test_every_algorithm_has_a_tiny_config():
    assert set(TINY) == set(list_algorithms())


def test_the_recorder_catches_the_usual_syncs():
    x = torch.tensor([0.5, -1.0])
    with RecordSyncs() as rec:
        x.sum().item()
        bool(x[0] > 0)
        torch.equal(x, x)
        x[x > 0]
        z = x.clone()
        z[z < 0] = 0.0
        y = x[torch.tensor([1, 0])] * 2  # integer indexing: no sync
    assert len(rec.calls) == 5, rec.calls
    assert "index" in rec.calls[3] and "index_put" in rec.calls[4]
    assert y.tolist() == [-2.0, 1.0] and z.tolist() == [0.5, 0.0]


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_training_chunk_never_waits_for_the_device(name):
    module = get(name)
    config = module.Config(**TINY[name])
    env, env_params = getattr(module, "make_env", funrl.envs.make)(DEFAULT_ENVS[name])  # LM: a task
    driver = Driver(module.make_algorithm, config, env, env_params, compile=False)
    state = driver.init(jr.split(jr.key(0), 2))
    assert driver.num_updates >= 2, "the tiny config must run several updates"
    with RecordSyncs() as rec:
        state, metrics = driver.run(state, chunk_size=driver.num_updates)
    assert rec.num_ops > 100 * driver.num_updates, rec.num_ops  # it watched the updates' ops
    assert rec.calls == [], f"{name}: {len(rec.calls)} host syncs in one chunk, first: {rec.calls[:3]}"
    # the chunk did run: one metrics row per update, for both seeds
    assert all(v.shape[:2] == (2, driver.num_updates) for v in metrics.values())  # [seeds, updates]
