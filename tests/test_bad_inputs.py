"""Bad input raises a clear error naming the argument (issue 15, item 4).

Where a value cannot be checked (tensors under ``vmap``), the documented
behaviour is tested instead.
"""

import pytest
import torch

import funrl
from funrl import random as fr


# 1. uniform with minval > maxval
def test_uniform_minval_above_maxval_raises():
    key = fr.key(0)
    with pytest.raises(ValueError, match="minval"):
        fr.uniform(key, (4,), minval=1, maxval=0)
    # equal bounds are allowed and give minval
    assert torch.all(fr.uniform(key, (4,), minval=2.0, maxval=2.0) == 2.0)


def test_uniform_tensor_bounds_reversed_give_minval():
    # documented: tensor bounds are not checked by value; minval >= maxval gives minval
    out = fr.uniform(fr.key(0), (8,), minval=torch.tensor(1.0), maxval=torch.tensor(0.0))
    assert torch.all(out == 1.0)


# 2. categorical with an all -inf row
def test_categorical_all_neg_inf_row_returns_zero():
    logits = torch.tensor([[0.0, 1.0, 2.0], [-float("inf")] * 3])
    out = fr.categorical(fr.key(1), logits)
    assert out.dtype == torch.int64
    assert out[1].item() == 0
    # also under vmap
    keys = fr.split(fr.key(2), 2)
    vm = torch.func.vmap(lambda k, l: fr.categorical(k, l))(keys, logits)
    assert vm[1].item() == 0
