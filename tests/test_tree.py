"""Tests for funrl.tree."""

import dataclasses
from typing import NamedTuple

import pytest
import torch
import torch.utils._pytree as _pytree
from hypothesis import given, settings
from hypothesis import strategies as st

import funrl
from funrl import tree
from helpers import assert_match


class Pair(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor


@tree.pytree_dataclass
class State:
    x: torch.Tensor
    y: dict


@tree.pytree_dataclass(static_fields=("n",))
class WithStatic:
    x: torch.Tensor
    n: int


def sample_tree(scale=1.0):
    return {
        "w": torch.arange(6.0).reshape(2, 3) * scale,
        "layers": [torch.ones(2) * scale, Pair(torch.tensor(2.0) * scale, torch.zeros(3))],
        "s": State(torch.tensor([1.0, -1.0]) * scale, {"k": torch.full((2,), 3.0) * scale}),
    }


def test_private_pytree_api_still_exists():
    """funrl depends on these private torch names; fail loudly if torch changes them."""
    for name in [
        "tree_flatten",
        "tree_unflatten",
        "tree_leaves",
        "tree_structure",
        "register_pytree_node",
        "TreeSpec",
        "GetAttrKey",
    ]:
        assert hasattr(_pytree, name), f"torch.utils._pytree.{name} is gone; update funrl.tree"
    flat, spec = _pytree.tree_flatten({"a": [torch.ones(1), (torch.zeros(1),)]})
    assert len(flat) == 2 and _pytree.tree_unflatten(flat, spec)["a"][1][0].shape == (1,)


def test_map_leaves_structure_roundtrip():
    t = sample_tree()
    doubled = tree.map(lambda x: 2 * x, t)
    assert isinstance(doubled["s"], State) and isinstance(doubled["layers"][1], Pair)
    assert torch.equal(doubled["w"], 2 * t["w"])
    assert len(tree.leaves(t)) == tree.num_leaves(t) == 6
    assert tree.equal(tree.unflatten(tree.structure(t), tree.leaves(t)), t)
    assert tree.size(t) == 6 + 2 + 1 + 3 + 2 + 2
    summed = tree.map(lambda x, y: x + y, t, doubled)
    assert tree.allclose(summed, tree.scale(3.0, t))
    assert tree.allclose(tree.sub(tree.add(t, t), t), t)


def test_map_structure_mismatch_raises():
    with pytest.raises(ValueError, match=r"rest\[0\]: expected a pytree with the structure of tree"):
        tree.map(lambda x, y: x, {"a": torch.ones(1)}, {"b": torch.ones(1)})
    with pytest.raises(TypeError, match="f: expected a callable"):
        tree.map(3, {"a": torch.ones(1)})


def test_stack_unstack_index_concatenate():
    trees = [sample_tree(float(i)) for i in range(4)]
    s = tree.stack(trees)
    assert s["w"].shape == (4, 2, 3) and s["s"].x.shape == (4, 2)
    back = tree.unstack(s)
    assert len(back) == 4 and all(tree.equal(a, b) for a, b in zip(back, trees))
    assert tree.equal(tree.index(s, 2), trees[2])
    c = tree.concatenate([s, s])
    assert c["w"].shape == (8, 2, 3)
    with pytest.raises(ValueError, match="trees: expected at least one pytree"):
        tree.stack([])


def test_unstack_mismatched_leading_axis_raises():
    with pytest.raises(ValueError, match="leaf 1 has size 2 on axis 0, expected 3"):
        tree.unstack({"a": torch.zeros(3), "b": torch.zeros(2)})


def test_zeros_ones_full_like_keep_dtype_and_device():
    t = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(3, dtype=torch.int64)}
    z = tree.zeros_like(t)
    assert z["a"].dtype == torch.float64 and z["b"].dtype == torch.int64 and float(z["a"].sum()) == 0
    assert float(tree.ones_like(t)["a"].sum()) == 2
    assert float(tree.full_like(t, 7)["b"].sum()) == 21


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(-100, 100), min_size=1, max_size=5), min_size=1, max_size=4))
def test_global_norm_equals_norm_of_concatenation(values):
    t = [torch.tensor(v, dtype=torch.float64) for v in values]
    flat = torch.cat(t)
    assert torch.allclose(tree.global_norm(t), torch.linalg.vector_norm(flat), rtol=1e-12, atol=1e-12)
    assert torch.allclose(tree.vdot(t, t), (flat * flat).sum(), rtol=1e-12, atol=1e-9)


def test_ravel_roundtrip_and_errors():
    t = sample_tree()
    flat, unravel = tree.ravel(t)
    assert flat.shape == (tree.size(t),)
    assert tree.equal(unravel(flat), t)
    assert torch.equal(flat[:6], t["w"].reshape(-1))
    with pytest.raises(ValueError, match=r"flat: expected a 1-D tensor of shape \(16,\), got \(3,\)"):
        unravel(torch.zeros(3))


def test_ravel_restores_dtypes():
    t = {"a": torch.tensor([1.5, 2.5], dtype=torch.float64), "b": torch.tensor([3], dtype=torch.int64)}
    flat, unravel = tree.ravel(t)
    back = unravel(flat)
    assert back["b"].dtype == torch.int64 and back["b"].tolist() == [3]


def test_partition_combine_by_predicate_and_mask():
    t = {"w": torch.ones(2, 2), "b": torch.zeros(2), "nested": {"w": torch.ones(3, 3)}}
    matrices, vectors = tree.partition(lambda x: x.ndim == 2, t)
    assert tree.leaves(matrices)[0] is not None
    assert tree.equal(tree.combine(matrices, vectors), t)
    mask = {"w": True, "b": False, "nested": {"w": False}}
    yes, no = tree.partition(mask, t)
    assert torch.equal(yes["w"], t["w"]) and yes["b"] is tree.HOLE
    assert no["w"] is tree.HOLE and torch.equal(no["nested"]["w"], t["nested"]["w"])
    assert tree.equal(tree.combine(yes, no), t)
    with pytest.raises(ValueError, match="predicate: a mask pytree must have the structure of tree"):
        tree.partition({"w": True}, t)
    with pytest.raises(ValueError, match="combine expects disjoint halves"):
        tree.combine(t, t)


def test_registered_dataclass_through_vmap_grad_compile():
    s = State(torch.tensor([1.0, 2.0]), {"k": torch.tensor([3.0, 4.0])})

    def loss(state):
        return (state.x * state.y["k"]).sum()

    g = torch.func.grad(loss)(s)
    assert isinstance(g, State)
    assert torch.equal(g.x, s.y["k"]) and torch.equal(g.y["k"], s.x)

    batched = tree.stack([s, tree.scale(2.0, s)])
    out = torch.func.vmap(lambda st: tree.map(lambda v: v + 1, st))(batched)
    assert isinstance(out, State) and torch.equal(out.x[1], 2 * s.x + 1)

    w = WithStatic(torch.ones(2), 5)
    w2 = tree.map(lambda v: v * 3, w)
    assert w2.n == 5 and torch.equal(w2.x, torch.full((2,), 3.0))
    assert tree.num_leaves(w) == 1


@pytest.mark.compile
def test_compile_accepts_dataclass_and_namedtuple():
    @funrl.jit
    def f(state, pair):
        return State(state.x * pair.a, {"k": state.y["k"] + pair.b}), tree.global_norm(pair)

    s = State(torch.tensor([1.0, 2.0]), {"k": torch.tensor([3.0, 4.0])})
    p = Pair(torch.tensor(2.0), torch.tensor([1.0, 1.0]))
    out, norm = f(s, p)
    assert isinstance(out, State)
    assert torch.equal(out.x, torch.tensor([2.0, 4.0])) and torch.equal(out.y["k"], torch.tensor([4.0, 5.0]))
    assert torch.allclose(norm, torch.tensor(6.0).sqrt())


def test_register_dataclass_errors():
    with pytest.raises(TypeError, match="cls: expected a dataclass type"):
        tree.register_dataclass(int)

    @dataclasses.dataclass
    class D:
        a: torch.Tensor

    with pytest.raises(ValueError, match="static_fields: 'b' is not a field of D"):
        tree.register_dataclass(D, static_fields=("b",))


# ----------------------------------------------------------------------------- split / join (trainable subsets)
def _params():
    return {
        "body": {"w": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)},
        "head": {"w": torch.randn(2, 3, dtype=torch.float64), "lora": {"a": torch.randn(1, 3, dtype=torch.float64)}},
    }


def test_split_join_by_regex_callable_and_prefix_mask():
    p = _params()
    yes, no = tree.split(r"head\.", p)
    assert set(yes) == {"head"} and set(no) == {"body"}
    assert yes["head"]["w"] is p["head"]["w"] and no["body"]["b"] is p["body"]["b"]
    assert tree.equal(tree.join(no, yes), p)
    # dict key order is part of a pytree's structure: `like` restores the original one
    assert list(tree.join(yes, no)) == ["head", "body"] and not tree.equal(tree.join(yes, no), p)
    assert tree.equal(tree.join(yes, no, like=p), p)
    # callable (path, leaf): only the matrices named w
    ws, rest = tree.split(lambda path, leaf: path.endswith(".w"), p)
    assert ws == {"body": {"w": p["body"]["w"]}, "head": {"w": p["head"]["w"]}}
    assert tree.equal(tree.join(ws, rest), p)
    # a prefix mask of Python bools
    yes2, no2 = tree.split({"body": False, "head": {"w": True, "lora": False}}, p)
    assert yes2 == {"head": {"w": p["head"]["w"]}}
    assert no2 == {"body": p["body"], "head": {"lora": p["head"]["lora"]}}
    # everything on one side: the other half is an empty dict
    allp, none = tree.split(lambda path, leaf: True, p)
    assert none == {} and tree.equal(allp, p)


def test_split_halves_go_through_grad_and_frozen_grads_are_never_computed():
    p = _params()

    class NoBackward(torch.autograd.Function):
        """Identity whose backward fails: reaching it means a frozen grad was computed."""

        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            raise AssertionError("a gradient of a frozen leaf was computed")

    x = torch.randn(5, 4, dtype=torch.float64)

    def loss(params):
        h = torch.tanh(x @ NoBackward.apply(params["body"]["w"]).T + NoBackward.apply(params["body"]["b"]))
        return ((h @ params["head"]["w"].T) ** 2).sum() + (params["head"]["lora"]["a"] ** 2).sum()

    trainable, frozen = tree.split(r"^head\.", p)
    g = torch.func.grad(lambda t, f: loss(tree.join(f, t)))(trainable, frozen)
    assert set(g) == {"head"} and set(g["head"]) == {"w", "lora"}
    assert not any(x.requires_grad for x in tree.leaves(frozen))
    # the same numbers as autograd on the whole tree, frozen part excluded
    ref = {"body": {k: v.detach().clone() for k, v in p["body"].items()},
           "head": {"w": p["head"]["w"].detach().clone().requires_grad_(),
                    "lora": {"a": p["head"]["lora"]["a"].detach().clone().requires_grad_()}}}
    gw, ga = torch.autograd.grad(loss(ref), [ref["head"]["w"], ref["head"]["lora"]["a"]])
    torch.testing.assert_close(g["head"]["w"], gw, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g["head"]["lora"]["a"], ga, rtol=1e-12, atol=1e-12)
    # partition's HOLE placeholders are what grad rejects (why split exists)
    holes_yes, holes_no = tree.partition(lambda leaf: leaf.ndim == 2, p)
    with pytest.raises(Exception, match="must be Tensor"):
        torch.func.grad(lambda t: loss(tree.combine(t, holes_no)))(holes_yes)


def test_split_and_join_under_vmap():
    S = 3
    stacked = {"a": {"w": torch.randn(S, 2, 2)}, "b": torch.randn(S, 2)}
    out = torch.func.vmap(lambda t: tree.join(*tree.split(r"^a\.", t)))(stacked)
    assert_match(out, stacked)


def test_split_join_errors_name_the_argument():
    p = _params()
    with pytest.raises(ValueError, match=r"predicate: .* no entry for head\.lora"):
        tree.split({"body": True, "head": {"w": True}}, p)
    with pytest.raises(TypeError, match="predicate: mask entry at body.w must be a Python bool, got Tensor"):
        tree.split({"body": {"w": torch.tensor(True), "b": True}, "head": True}, p)
    with pytest.raises(TypeError, match="tree: split needs nested dicts, got a list at layers"):
        tree.split(r"w", {"layers": [torch.ones(1)]})
    with pytest.raises(ValueError, match="predicate: expected a valid regular expression"):
        tree.split("(", p)
    with pytest.raises(ValueError, match="a, b: both hold body.w"):
        tree.join(p, {"body": {"w": torch.ones(1)}})
    with pytest.raises(TypeError, match="b: expected a nested dict, got list"):
        tree.join(p, [])
    with pytest.raises(ValueError, match="like: expected the keys"):
        tree.join(*tree.split(r"^head", p), like={"body": 1})


def test_where_selects_whole_trees_and_per_row():
    a = {"x": torch.tensor([1.0, 2.0]), "p": Pair(torch.tensor(3), torch.tensor([[4.0]]))}
    b = {"x": torch.tensor([5.0, 6.0]), "p": Pair(torch.tensor(7), torch.tensor([[8.0]]))}
    assert tree.equal(tree.where(torch.tensor(True), a, b), a)
    assert tree.equal(tree.where(torch.tensor(False), a, b), b)
    # under vmap a () flag per row picks per row, as jax.lax.select does
    rows = torch.func.vmap(lambda f, u, v: tree.where(f, u, v))(torch.tensor([True, False]), torch.arange(2.0), -torch.arange(2.0) - 5)
    assert rows.tolist() == [0.0, -6.0]
    # unbatched inputs are left unchanged (pure)
    assert a["x"].tolist() == [1.0, 2.0] and b["x"].tolist() == [5.0, 6.0]


def test_where_rejects_bad_flag_and_mismatched_trees():
    with pytest.raises(TypeError, match="pred: expected a bool tensor, got a torch.float32 tensor"):
        tree.where(torch.tensor(1.0), {"x": torch.zeros(1)}, {"x": torch.ones(1)})
    with pytest.raises(TypeError, match="pred: expected a bool tensor, got bool"):
        tree.where(True, {"x": torch.zeros(1)}, {"x": torch.ones(1)})
    with pytest.raises(ValueError, match="on_true, on_false: expected the same tree structure"):
        tree.where(torch.tensor(True), {"x": torch.zeros(1)}, {"y": torch.ones(1)})
