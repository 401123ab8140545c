"""Shared test setup.

One torch thread per test process: the suite runs under pytest-xdist with one
worker per core, and the many tiny ops of functional RL code run ~30x slower
when threads oversubscribe the cores (see shared/torch-func-notes.md).
``FUNRL_TEST_THREADS=2`` runs the suite with two threads per process, to check
that no result the tests pin depends on the thread count (run it with ``-n 1``).
"""

import os

import pytest
import torch

from funrl.envs import make

torch.set_num_threads(int(os.environ.get("FUNRL_TEST_THREADS", "1")))
# `funrl train` re-launches itself under torchrun on a multi-core machine (funrl.launch); tests that call
# the CLI in this process (or start it as a child) run one process unless they ask for more
os.environ["FUNRL_PROCESSES"] = "1"


@pytest.fixture(scope="module")
def cartpole():
    """``make("CartPole-v1")``: ``(env, params)``."""
    return make("CartPole-v1")


@pytest.fixture(scope="module")
def pendulum():
    """``make("Pendulum-v1")``: ``(env, params)``."""
    return make("Pendulum-v1")
