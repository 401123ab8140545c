"""Tests of funrl.algorithms.replay: the functional circular replay buffer."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funrl import random as jr
from funrl import tree
from funrl.algorithms import replay
from funrl.compile import jit
from helpers import assert_match


def _item():
    return {"obs": torch.zeros(3), "action": torch.zeros((), dtype=torch.int64)}


def _batch(values):
    """Items whose obs rows are (v, -v, 2v) and whose action is v, for each v."""
    v = torch.as_tensor(values, dtype=torch.int64)
    obs = torch.stack([v, -v, 2 * v], -1).to(torch.float32)
    return {"obs": obs, "action": v}


def _reference(capacity, batches):
    """A plain Python circular buffer fed one item at a time: (slots, position, size)."""
    slots = [0] * capacity
    pos = size = 0
    for values in batches:
        for v in values:
            slots[pos] = v
            pos = (pos + 1) % capacity
            size = min(size + 1, capacity)
    return slots, pos, size


def test_init_shapes_dtypes_and_zeros():
    buf = replay.init(_item(), 7)
    assert buf.data["obs"].shape == (7, 3) and buf.data["obs"].dtype == torch.float32
    assert buf.data["action"].shape == (7,) and buf.data["action"].dtype == torch.int64
    assert int(buf.position) == 0 and int(buf.size) == 0
    assert buf.position.dtype == torch.int64 and buf.size.dtype == torch.int64
    assert tree.equal(buf.data, tree.map(torch.zeros_like, buf.data))
    assert replay.capacity(buf) == 7


def test_wraparound_order_hand_computed():
    buf = replay.init(_item(), 4)
    buf = replay.add(buf, _batch([1, 2, 3]))
    assert buf.data["action"].tolist() == [1, 2, 3, 0]
    assert (int(buf.position), int(buf.size)) == (3, 3)
    buf = replay.add(buf, _batch([4, 5, 6]))  # 4 -> slot 3, then 5, 6 overwrite slots 0, 1
    assert buf.data["action"].tolist() == [5, 6, 3, 4]
    assert buf.data["obs"][:, 1].tolist() == [-5.0, -6.0, -3.0, -4.0]
    assert (int(buf.position), int(buf.size)) == (2, 4)


def test_batch_larger_than_capacity_keeps_the_last_items():
    buf = replay.init(_item(), 3)
    buf = replay.add(buf, _batch([1]))
    buf = replay.add(buf, _batch([2, 3, 4, 5, 6, 7, 8]))  # item-by-item: last three are 6, 7, 8
    slots, pos, size = _reference(3, [[1], [2, 3, 4, 5, 6, 7, 8]])
    assert buf.data["action"].tolist() == slots == [7, 8, 6]
    assert (int(buf.position), int(buf.size)) == (pos, size)


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 9),
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=6),
)
def test_add_matches_item_by_item_reference(capacity, sizes):
    batches, start = [], 1
    for n in sizes:
        batches.append(list(range(start, start + n)))
        start += n
    buf = replay.init(_item(), capacity)
    for values in batches:
        buf = replay.add(buf, _batch(values))
    slots, pos, size = _reference(capacity, batches)
    assert buf.data["action"].tolist() == slots
    assert torch.equal(buf.data["obs"], _batch(slots)["obs"])
    assert (int(buf.position), int(buf.size)) == (pos, size)


def test_add_does_not_mutate_inputs():
    buf = replay.add(replay.init(_item(), 5), _batch([1, 2]))
    items = _batch([3, 4, 5, 6])
    before_buf, before_items = tree.map(torch.clone, buf), tree.map(torch.clone, items)
    new = replay.add(buf, items)
    assert tree.equal(buf, before_buf)
    assert tree.equal(items, before_items)
    assert not tree.equal(new.data, buf.data)
    # the new buffer shares no storage with the old one
    for a, b in zip(tree.leaves(new.data), tree.leaves(buf.data)):
        assert a.data_ptr() != b.data_ptr()


def test_sample_only_filled_slots_and_uniform():
    buf = replay.add(replay.init(_item(), 10), _batch([1, 2, 3]))
    batch = replay.sample(buf, jr.key(0), 3000)
    a = batch["action"]
    assert a.shape == (3000,) and batch["obs"].shape == (3000, 3)
    assert set(a.tolist()) == {1, 2, 3}
    # every sampled row is a stored item, obs consistent with action
    assert torch.equal(batch["obs"], _batch(a)["obs"])
    counts = torch.bincount(a, minlength=4)[1:].double()
    # 1000 expected per slot, binomial sd ~ 26: 5 sd bounds
    assert bool(((counts - 1000).abs() < 130).all()), counts


def test_sample_after_wraparound_covers_whole_buffer():
    buf = replay.init(_item(), 4)
    buf = replay.add(buf, _batch([1, 2, 3, 4, 5, 6]))
    a = replay.sample(buf, jr.key(1), 400)["action"]
    assert set(a.tolist()) == {3, 4, 5, 6}


def test_sample_is_deterministic_in_key():
    buf = replay.add(replay.init(_item(), 50), _batch(list(range(1, 41))))
    a1 = replay.sample(buf, jr.key(3), 64)
    a2 = replay.sample(buf, jr.key(3), 64)
    b = replay.sample(buf, jr.key(4), 64)
    assert tree.equal(a1, a2)
    assert not torch.equal(a1["action"], b["action"])


def test_empty_buffer_samples_zeros_and_can_sample():
    buf = replay.init(_item(), 5)
    batch = replay.sample(buf, jr.key(0), 4)
    assert tree.equal(batch, tree.map(torch.zeros_like, batch))
    assert replay.can_sample(buf, 0).dtype == torch.bool
    assert bool(replay.can_sample(buf, 0)) and not bool(replay.can_sample(buf, 1))
    buf = replay.add(buf, _batch([1, 2, 3]))
    assert bool(replay.can_sample(buf, 3)) and not bool(replay.can_sample(buf, 4))
    assert bool(replay.can_sample(buf, torch.tensor(2)))


def test_gather_and_sample_indices():
    buf = replay.add(replay.init(_item(), 6), _batch([7, 8, 9]))
    idx = replay.sample_indices(buf, jr.key(2), 50)
    assert idx.dtype == torch.int64 and bool(((idx >= 0) & (idx < 3)).all())
    got = replay.gather(buf, torch.tensor([2, 0, 2]))
    assert got["action"].tolist() == [9, 7, 9]


def test_vmap_over_buffers_equals_loop():
    S = 3
    # buffers at different fill levels and positions
    bufs = [replay.add(replay.init(_item(), 5), _batch(list(range(10 * s + 1, 10 * s + 2 + 2 * s)))) for s in range(S)]
    stacked = tree.stack(bufs)
    items = {"obs": torch.randn(S, 4, 3), "action": torch.arange(S * 4).reshape(S, 4)}
    keys = jr.split(jr.key(5), S)

    def step(buf, x, k):
        buf = replay.add(buf, x)
        return buf, replay.sample(buf, k, 6), replay.can_sample(buf, 5)

    out = torch.func.vmap(step)(stacked, items, keys)
    for s in range(S):
        ref = step(bufs[s], tree.index(items, s), keys[s])
        assert_match(ref, tree.index(out, s))


def test_vmapped_init_is_batched():
    obs = torch.randn(4, 3)
    buf = torch.func.vmap(lambda o: replay.init({"obs": o}, 6))(obs)
    assert buf.data["obs"].shape == (4, 6, 3) and buf.size.shape == (4,)


@pytest.mark.compile
def test_compiled_equals_eager():
    S, cap = 2, 6
    bufs = tree.stack([replay.add(replay.init(_item(), cap), _batch([1 + s, 2 + s, 3 + s])) for s in range(S)])
    items = {"obs": torch.randn(S, 5, 3), "action": torch.arange(S * 5).reshape(S, 5)}
    keys = jr.split(jr.key(9), S)

    def step(buf, x, k):
        buf = replay.add(buf, x)
        return buf, replay.sample(buf, k, 8), replay.can_sample(buf, 7)

    eager = torch.func.vmap(step)(bufs, items, keys)
    compiled = jit(torch.func.vmap(step))(bufs, items, keys)
    assert_match(compiled, eager)  # data movement and integer draws: bit for bit even compiled


def test_bad_inputs():
    with pytest.raises(ValueError, match="capacity"):
        replay.init(_item(), 0)
    with pytest.raises(ValueError, match="capacity"):
        replay.init(_item(), 2.5)
    with pytest.raises(ValueError, match="example_item"):
        replay.init({}, 3)
    with pytest.raises(TypeError, match="example_item"):
        replay.init({"obs": [1.0, 2.0]}, 3)
    buf = replay.init(_item(), 4)
    with pytest.raises(TypeError, match="state"):
        replay.add((buf.data, buf.position, buf.size), _batch([1]))
    with pytest.raises(ValueError, match="structure"):
        replay.add(buf, {"obs": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match=r"leaf 0 expected shape \(N, 3\).*got \(2, 4\)"):
        replay.add(buf, {"obs": torch.zeros(2, 4), "action": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(ValueError, match="same N"):
        replay.add(buf, {"obs": torch.zeros(2, 3), "action": torch.zeros(3, dtype=torch.int64)})
    with pytest.raises(TypeError, match="dtype"):
        replay.add(buf, {"obs": torch.zeros(2, 3, dtype=torch.float64), "action": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(buf, jr.key(0), 0)
    with pytest.raises(TypeError, match="key"):
        replay.sample(buf, torch.zeros(2), 4)
    with pytest.raises(ValueError, match="batch_size"):
        replay.can_sample(buf, -1)
    with pytest.raises(ValueError, match="batch_size"):
        replay.can_sample(buf, torch.tensor(1.0))
    with pytest.raises(ValueError, match="indices"):
        replay.gather(buf, torch.tensor([[0]]))
    with pytest.raises(ValueError, match="state.position"):
        replay.add(buf._replace(position=torch.tensor(0.0)), _batch([1]))
