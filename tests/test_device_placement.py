"""Every tensor follows the key's device: each algorithm trains with its key and env params on ``meta``.

``meta`` tensors have shapes and dtypes but no data, and an operation that
mixes a meta tensor with a CPU tensor of one or more elements raises -- as one
that mixes CUDA and CPU tensors does.  So a tensor created on the CPU by
default (a missing ``device=``) inside an algorithm, an env or a loss fails
here, on a CPU-only machine, instead of on a user's GPU.  Reading a value
(``.item()``) fails on meta too; the training chunk has none
(``test_no_host_sync.py``).
"""

from __future__ import annotations

import pytest
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.algorithms import DEFAULT_ENVS, get
from funrl.algorithms.common import Driver
from helpers import TINY

META = torch.device("meta")


def test_meta_device_catches_a_default_cpu_tensor():
    x = torch.ones(3, device=META)
    with pytest.raises(RuntimeError, match="device"):
        x + torch.ones(3)  # what a forgotten device= looks like
    assert (x * torch.tensor(2.0)).device == META  # CPU scalars mix with any device, on CUDA too


# rloo and sft run only pieces grpo runs too (lm_common's generate, pretrain and clipped update); ppo_lm adds its own
@pytest.mark.parametrize("name", sorted(set(TINY) - {"rloo", "sft"}))
def test_training_stays_on_the_keys_device(name):
    module = get(name)
    env, env_params = getattr(module, "make_env", funrl.envs.make)(DEFAULT_ENVS[name])  # LM algorithms: a task
    env_params = tree.map(lambda x: x.to(META) if isinstance(x, torch.Tensor) else x, env_params)
    driver = Driver(module.make_algorithm, module.Config(**TINY[name]), env, env_params, compile=False)
    state = driver.init(jr.split(jr.key(0), 2).to(META))
    state, metrics = driver.run(state, chunk_size=driver.num_updates)
    leaves = [x for x in tree.leaves((state, metrics)) if isinstance(x, torch.Tensor)]
    assert leaves and all(x.device == META for x in leaves), {str(x.device) for x in leaves}
    assert all(v.shape[:2] == (2, driver.num_updates) for v in metrics.values())  # [seeds, updates]
