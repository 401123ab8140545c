"""Shared test setup.

One torch thread per test process: the suite runs under pytest-xdist with one
worker per core, and the many tiny ops of functional RL code run ~30x slower
when threads oversubscribe the cores (see shared/torch-func-notes.md).
"""

import torch

torch.set_num_threads(1)
