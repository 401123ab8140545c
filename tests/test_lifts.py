"""The lifts: batch axes declared with the piece, strides handled in the lifts, and every path of every algorithm agreeing.

Three ways run an algorithm's pieces: ``torch.func.vmap(train)`` (each piece a batch of one,
:func:`one_seed_lift`, under an outer ``vmap``), the eager :class:`Driver` (:func:`vmap_lift`) and
the compiled one (:func:`compiled_lift`).  The first two are bit for bit equal (the reproducibility
contract); compiled vs eager is equal up to reassociation (Inductor reorders sums).
"""

from __future__ import annotations

import pytest
import torch

import funrl
from funrl import random as jr
from funrl.algorithms import DEFAULT_ENVS, common, get
from funrl.algorithms.common import (
    compiled_lift,
    identity_lift,
    in_dims_of,
    lift_pieces,
    one_seed_lift,
    shared,
    stack_steps,
    vmap_lift,
)
from helpers import TINY, assert_match


# ---------------------------------------------------------------- declared batch axes
def test_shared_arguments_become_none_in_dims():
    @shared("index")
    def piece(params, minibatches, index):
        return minibatches[index] * params

    assert in_dims_of(piece) == (0, 0, None)
    assert in_dims_of(lambda a, b: a + b) == 0  # nothing declared: every argument has the seed axis


def test_an_unknown_shared_name_is_a_clear_error():
    def f(x, index):
        return x

    with pytest.raises(ValueError, match=r"shared: \['idx'\] are not arguments of f\('x', 'index'\)"):
        shared("idx")(f)


@pytest.mark.parametrize("lift", [one_seed_lift, vmap_lift, compiled_lift])
def test_every_lift_reads_the_declaration(lift):
    @shared("index")
    def pick(rows, index):  # rows [4] per seed; index () shared
        return torch.index_select(rows, 0, index.reshape(1)).squeeze(0) * 10

    rows = torch.arange(12.0).reshape(3, 4)  # 3 seeds
    index = torch.tensor(2)
    if lift is one_seed_lift:
        got = torch.stack([lift(pick)(rows[s], index) for s in range(3)])
    else:
        got = lift(pick)(rows, index)
    assert torch.equal(got, rows[:, 2] * 10)


def test_lift_pieces_lifts_each_piece_in_order():
    seen = []

    def lift(fn):
        seen.append(fn.__name__)
        return fn

    def a(x):
        return x

    def b(x):
        return x

    assert lift_pieces(lift, a, b) == (a, b) and seen == ["a", "b"]


# ---------------------------------------------------------------- strides: the lifts' business
def _strided_piece(key, x):
    """Returns a row of split() (a strided view) and a tensor made under vmap without a seed axis (stride 0)."""
    key, _ = jr.split(key)
    return key, x + torch.zeros(3)


@pytest.mark.parametrize("lift", [vmap_lift, compiled_lift])
def test_lifted_outputs_are_contiguous_so_a_fed_back_call_never_recompiles(lift):
    keys, x = jr.split(jr.key(0), 4), torch.zeros(4, 3)
    piece = lift(_strided_piece)
    keys, x = piece(keys, x)
    assert keys.is_contiguous() and x.is_contiguous() and x.stride() == (3, 1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            keys, x = piece(keys, x)  # carried outputs in, as a Driver does: same strides, no recompile


def test_stack_steps_is_never_compiled_and_identity_lift_runs_a_piece_as_is():
    assert not hasattr(compiled_lift(stack_steps), "_torchdynamo_orig_callable")
    assert hasattr(compiled_lift(_strided_piece), "_torchdynamo_orig_callable")
    f = lambda x: x + 1  # noqa: E731
    assert identity_lift(f) is f


def test_no_algorithm_body_handles_strides():
    """Stride handling lives in common.py's lifts: no algorithm copies a key or output to dodge a recompile."""
    import pathlib
    import re

    folder = pathlib.Path(common.__file__).parent
    offenders = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "common.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"key\.clone\(|contiguous_format|\.contiguous\(\)", line):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert not offenders, offenders


# ---------------------------------------------------------------- every path of every algorithm
DEEP_RL = sorted(n for n in TINY if not get(n).__name__.endswith(("grpo", "rloo", "ppo_lm", "sft")))


def _setup(name):
    module = get(name)
    env, env_params = getattr(module, "make_env", funrl.envs.make)(DEFAULT_ENVS[name])
    return module, module.Config(**TINY[name]), env, env_params


@pytest.mark.parametrize("name", sorted(TINY))
def test_vmap_train_equals_the_eager_driver_bit_for_bit(name):
    module, config, env, env_params = _setup(name)
    keys = jr.split(jr.key(7), 2)
    states, metrics = torch.func.vmap(module.make_train(config, env, env_params))(keys)
    eager = common.Driver(module.make_algorithm, config, env, env_params, compile=False)
    e_state, e_metrics = eager.run(eager.init(keys), chunk_size=eager.num_updates)
    assert_match(e_metrics, metrics)  # [seeds, updates] both
    assert_match(e_state, states)


@pytest.mark.compile
@pytest.mark.parametrize("name", DEEP_RL)
def test_the_compiled_driver_equals_the_eager_driver_up_to_reassociation(name):
    module, config, env, env_params = _setup(name)
    keys = jr.split(jr.key(7), 2)
    eager = common.Driver(module.make_algorithm, config, env, env_params, compile=False)
    compiled = common.Driver(module.make_algorithm, config, env, env_params, compile=True)
    e_state, e_metrics = eager.run(eager.init(keys), chunk_size=eager.num_updates)
    with torch._dynamo.config.patch(error_on_recompile=True):  # one graph per piece, whatever the update
        c_state, c_metrics = compiled.run(compiled.init(keys), chunk_size=compiled.num_updates)
    assert_match(c_state, e_state, exact=False)  # integer leaves (keys, actions, counters) exactly
    # a loss that is a mean of cancelling terms (pg_loss ~ 1e-4 from terms ~ 1) moves by the terms' ulps,
    # not its own: metrics are compared to 1e-6 absolute, far below what a wrong formula would move them
    assert c_metrics.keys() == e_metrics.keys()
    for k in e_metrics:
        torch.testing.assert_close(c_metrics[k], e_metrics[k], rtol=1e-5, atol=1e-6, msg=k)
