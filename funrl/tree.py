"""Pytree utilities for parameter dicts, optimizer states and env states.

A pytree is any nesting of dicts, lists, tuples, NamedTuples and registered
dataclasses whose leaves are tensors (or other objects).  funrl builds on
``torch.utils._pytree`` because that is what ``torch.func`` and
``torch.compile`` use: a structure registered there is accepted by ``vmap``,
``grad`` and ``compile``.  It is a private module; ``tests/test_tree.py`` fails
loudly if the parts used here change.

Use :func:`register_dataclass` (or :func:`pytree_dataclass`) on funrl's own
state/params dataclasses so they travel through ``vmap`` and ``compile``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import torch
import torch.utils._pytree as _pytree

__all__ = [
    "map",
    "leaves",
    "structure",
    "unflatten",
    "stack",
    "unstack",
    "index",
    "concatenate",
    "zeros_like",
    "ones_like",
    "full_like",
    "global_norm",
    "ravel",
    "partition",
    "combine",
    "split",
    "join",
    "register_dataclass",
    "pytree_dataclass",
    "add",
    "sub",
    "scale",
    "vdot",
    "allclose",
    "equal",
    "where",
    "num_leaves",
    "size",
]

_builtin_map = map


def _check_callable(f, name: str):
    if not callable(f):
        raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")


def map(f: Callable, tree: Any, *rest: Any, is_leaf: Callable | None = None) -> Any:
    """Apply ``f`` leaf-wise: ``f(leaf, *corresponding_leaves_of_rest)``.

    Args:
      f: function of one leaf from each tree.
      tree: a pytree; ``rest`` must have the same structure.
      is_leaf: optional predicate that stops recursion at a subtree.

    Returns:
      A pytree of the same structure with ``f``'s results as leaves.
    """
    _check_callable(f, "f")
    flat, spec = _pytree.tree_flatten(tree, is_leaf=is_leaf)
    others = []
    for i, r in enumerate(rest):
        rflat, rspec = _pytree.tree_flatten(r, is_leaf=is_leaf)
        if rspec != spec:
            raise ValueError(
                f"rest[{i}]: expected a pytree with the structure of tree ({spec}), got {rspec}"
            )
        others.append(rflat)
    return _pytree.tree_unflatten([f(*xs) for xs in zip(flat, *others)], spec)


def leaves(tree: Any, is_leaf: Callable | None = None) -> list:
    """The leaves of ``tree`` in a fixed (flatten) order."""
    return _pytree.tree_leaves(tree, is_leaf=is_leaf)


def structure(tree: Any, is_leaf: Callable | None = None) -> _pytree.TreeSpec:
    """The structure (``TreeSpec``) of ``tree``."""
    return _pytree.tree_structure(tree, is_leaf=is_leaf)


def unflatten(spec: _pytree.TreeSpec, leaves_: Sequence) -> Any:
    """Rebuild a pytree from its structure and leaves (inverse of :func:`leaves`)."""
    return _pytree.tree_unflatten(list(leaves_), spec)


def num_leaves(tree: Any) -> int:
    """Number of leaves in ``tree``."""
    return len(leaves(tree))


def size(tree: Any) -> int:
    """Total number of elements over all tensor leaves."""
    return sum(x.numel() for x in leaves(tree) if isinstance(x, torch.Tensor))


def _tensor_leaves(tree: Any, name: str) -> list[torch.Tensor]:
    ls = leaves(tree)
    for i, x in enumerate(ls):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: leaf {i} is a {type(x).__name__}, expected a torch.Tensor")
    return ls


def _key_str(k) -> str:
    for attr in ("key", "idx", "name"):  # MappingKey, SequenceKey, GetAttrKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaf_path(tree: Any, i: int) -> str:
    """The path of leaf ``i`` of ``tree``, keys joined with ``"."`` (``"obs.x"``)."""
    path = _pytree.tree_flatten_with_path(tree)[0][i][0]
    return ".".join(_key_str(k) for k in path) or "the root"


def _check_leaf_shapes(trees: Sequence[Any], dim: int | None) -> None:
    """Raise ``ValueError`` naming the leaf path unless corresponding tensor leaves have equal shapes.

    ``dim=None`` (stack): whole shapes must match; else (concatenate) all but axis ``dim``.
    Trees of different structure are left to :func:`map`, which names them.
    """
    flat0 = leaves(trees[0])
    for j, t in enumerate(trees[1:], 1):
        flat = leaves(t)
        if len(flat) != len(flat0):
            return
        for i, (a, b) in enumerate(zip(flat0, flat)):
            if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
                continue
            sa, sb = tuple(a.shape), tuple(b.shape)
            if dim is None:
                ok = sa == sb
                want = f"shape {sa}"
            else:
                d = dim % max(len(sa), 1)
                ok = len(sa) == len(sb) and sa[:d] + sa[d + 1:] == sb[:d] + sb[d + 1:]
                want = f"shape {sa} except on axis {dim}"
            if not ok:
                raise ValueError(
                    f"trees[{j}]: leaf {_leaf_path(trees[0], i)} has shape {sb}, expected {want} "
                    f"(its shape in trees[0])"
                )


def stack(trees: Sequence[Any], dim: int = 0) -> Any:
    """Stack a sequence of same-structure pytrees along a new axis ``dim``.

    ``stack([t_0, ..., t_{S-1}])`` has leaves of shape ``(S, *leaf.shape)``:
    the batched form that ``torch.func.vmap`` consumes.
    """
    if len(trees) == 0:
        raise ValueError("trees: expected at least one pytree, got an empty sequence")
    _check_leaf_shapes(trees, None)
    return map(lambda *xs: torch.stack(xs, dim=dim), trees[0], *trees[1:])


def unstack(tree: Any, dim: int = 0) -> list:
    """Inverse of :func:`stack`: split every leaf along ``dim`` into a list of pytrees."""
    ls = _tensor_leaves(tree, "tree")
    if not ls:
        raise ValueError("tree: expected at least one tensor leaf to unstack")
    n = ls[0].shape[dim]
    for i, x in enumerate(ls):
        if x.shape[dim] != n:
            raise ValueError(
                f"tree: leaf {i} has size {x.shape[dim]} on axis {dim}, expected {n} like leaf 0"
            )
    spec = structure(tree)
    return [unflatten(spec, [x.select(dim, j) for x in ls]) for j in range(n)]


def index(tree: Any, idx) -> Any:
    """Index every leaf with ``idx`` (e.g. ``index(stacked, 3)`` is seed 3's tree)."""
    return map(lambda x: x[idx], tree)


def concatenate(trees: Sequence[Any], dim: int = 0) -> Any:
    """Concatenate same-structure pytrees leaf-wise along an existing axis ``dim``."""
    if len(trees) == 0:
        raise ValueError("trees: expected at least one pytree, got an empty sequence")
    _check_leaf_shapes(trees, dim)
    return map(lambda *xs: torch.cat(xs, dim=dim), trees[0], *trees[1:])


def zeros_like(tree: Any) -> Any:
    """A pytree of zeros with the shapes, dtypes and devices of ``tree``'s leaves."""
    return map(torch.zeros_like, tree)


def ones_like(tree: Any) -> Any:
    """A pytree of ones with the shapes, dtypes and devices of ``tree``'s leaves."""
    return map(torch.ones_like, tree)


def full_like(tree: Any, value: float) -> Any:
    """A pytree filled with ``value`` shaped like ``tree``."""
    return map(lambda x: torch.full_like(x, value), tree)


def add(a: Any, b: Any) -> Any:
    """Leaf-wise ``a + b``."""
    return map(torch.add, a, b)


def sub(a: Any, b: Any) -> Any:
    """Leaf-wise ``a - b``."""
    return map(torch.sub, a, b)


def scale(s, tree: Any) -> Any:
    """Leaf-wise ``s * leaf`` (``s`` a number or a scalar tensor)."""
    return map(lambda x: s * x, tree)


def vdot(a: Any, b: Any) -> torch.Tensor:
    """Sum over leaves of ``sum(a_leaf * b_leaf)``; a scalar tensor."""
    la, lb = _tensor_leaves(a, "a"), _tensor_leaves(b, "b")
    if structure(a) != structure(b):
        raise ValueError("b: expected a pytree with the structure of a")
    return sum(((x * y).sum() for x, y in zip(la, lb)), torch.zeros((), dtype=la[0].dtype, device=la[0].device))


def global_norm(tree: Any) -> torch.Tensor:
    """The L2 norm of all leaves taken together: ``sqrt(sum_leaves sum(leaf**2))``.

    Returns:
      A scalar tensor (dtype of the first leaf).  Branch-free and vmappable.
    """
    ls = _tensor_leaves(tree, "tree")
    if not ls:
        raise ValueError("tree: expected at least one tensor leaf")
    sq = [torch.sum(torch.square(x)) for x in ls]
    return torch.sqrt(torch.stack([s.to(ls[0].dtype) for s in sq]).sum())


def ravel(tree: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Flatten all leaves into one 1-D vector.

    Returns:
      ``(flat, unravel)``: ``flat`` has shape ``(size(tree),)`` (leaves cast to
      the first leaf's dtype, concatenated in flatten order) and
      ``unravel(flat)`` rebuilds a pytree with the original shapes and dtypes.
    """
    ls = _tensor_leaves(tree, "tree")
    spec = structure(tree)
    shapes = [x.shape for x in ls]
    dtypes = [x.dtype for x in ls]
    sizes = [math.prod(s) for s in shapes]
    if not ls:
        return torch.zeros(0), lambda flat: unflatten(spec, [])
    dtype = ls[0].dtype
    flat = torch.cat([x.reshape(-1).to(dtype) for x in ls])
    total = sum(sizes)

    def unravel(v: torch.Tensor) -> Any:
        if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.shape[0] != total:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"flat: expected a 1-D tensor of shape ({total},), got {got}")
        parts = torch.split(v, sizes)
        return unflatten(spec, [p.reshape(s).to(d) for p, s, d in zip(parts, shapes, dtypes)])

    return flat, unravel


def partition(predicate: Callable | Any, tree: Any) -> tuple[Any, Any]:
    """Split ``tree`` into two trees of the same structure (with ``HOLE`` placeholders).

    The halves keep every position, so they fit any pytree (NamedTuples,
    dataclasses); but ``torch.func.grad`` rejects the ``HOLE`` leaves.  To
    differentiate a trainable subset of a params dict, use :func:`split`.

    Args:
      predicate: a function ``leaf -> bool`` or a boolean mask pytree with the
        structure of ``tree`` (optax-style).
      tree: the pytree to split.

    Returns:
      ``(true_tree, false_tree)``: leaves where the predicate holds, ``None``
      elsewhere, and vice versa.  :func:`combine` undoes it.
    """
    if callable(predicate):
        mask = map(lambda x: bool(predicate(x)), tree)
    else:
        mask = predicate
    flat, spec = _pytree.tree_flatten(tree)
    mflat, mspec = _pytree.tree_flatten(mask)
    if mspec != spec:
        raise ValueError(f"predicate: a mask pytree must have the structure of tree ({spec}), got {mspec}")
    for i, m in enumerate(mflat):
        if not isinstance(m, bool):
            raise TypeError(f"predicate: mask leaf {i} must be a Python bool, got {type(m).__name__}")
    yes = [x if m else None for x, m in zip(flat, mflat)]
    no = [None if m else x for x, m in zip(flat, mflat)]
    return _unflatten_with_none(spec, yes), _unflatten_with_none(spec, no)


class _Hole:
    """Placeholder leaf for a partitioned-away value (``None`` would be an empty subtree)."""

    __slots__ = ()

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "_"


HOLE = _Hole()


def _unflatten_with_none(spec, flat):
    return unflatten(spec, [HOLE if x is None else x for x in flat])


def combine(a: Any, b: Any) -> Any:
    """Merge the two halves from :func:`partition` back into one tree."""
    fa, sa = _pytree.tree_flatten(a)
    fb, sb = _pytree.tree_flatten(b)
    if sa != sb:
        raise ValueError("b: expected the structure of a (both halves of one partition)")
    out = []
    for i, (x, y) in enumerate(zip(fa, fb)):
        if x is HOLE:
            out.append(y)
        elif y is HOLE:
            out.append(x)
        else:
            raise ValueError(f"a, b: leaf {i} is set in both halves; combine expects disjoint halves")
    return unflatten(sa, out)


def _path_str(path: tuple) -> str:
    return ".".join(path) or "the root"


def _split_flags(predicate, tree: Any) -> Callable[[tuple, Any], bool]:
    """``(path, leaf) -> bool`` from a regex, a callable or a (prefix) bool mask tree."""
    if isinstance(predicate, str):
        import re

        try:
            pattern = re.compile(predicate)
        except re.error as e:
            raise ValueError(f"predicate: expected a valid regular expression, got {predicate!r} ({e})") from None
        return lambda path, leaf: pattern.search(".".join(path)) is not None
    if callable(predicate):
        return lambda path, leaf: bool(predicate(".".join(path), leaf))

    def from_mask(path, leaf):
        node = predicate
        for i, k in enumerate(path):
            if isinstance(node, bool):
                return node
            if not isinstance(node, dict) or k not in node:
                raise ValueError(f"predicate: expected a bool mask with the structure of tree (or a prefix of it); "
                                 f"it has no entry for {_path_str(path[: i + 1])}")
            node = node[k]
        if not isinstance(node, bool):
            raise TypeError(f"predicate: mask entry at {_path_str(path)} must be a Python bool, got {type(node).__name__}")
        return node

    return from_mask


def split(predicate: Callable | str | Any, tree: Any) -> tuple[dict, dict]:
    """Split a nested-dict tree into two plain dict trees, each holding only its own leaves.

    Unlike :func:`partition` there are no placeholders, so each half can be
    passed to ``torch.func.grad`` / ``vmap`` / an optimizer on its own::

        trainable, frozen = tree.split(r"lora|head", params)
        grads = torch.func.grad(lambda t: loss(tree.join(t, frozen)))(trainable)

    ``grads`` holds only the trainable leaves: nothing is computed for the
    frozen ones (they never require grad).

    Args:
      predicate: selects the leaves of the first half: a regex searched in
        the leaf's path (dict keys joined with ``"."``), a callable
        ``(path: str, leaf) -> bool``, or a Python-bool mask dict with the
        tree's structure or a prefix of it (``{"body": False, "head": True}``).
      tree: nested dicts (any leaves).

    Returns:
      ``(selected, rest)``: nested dicts; dicts left empty are dropped (an
      empty half is ``{}``).  :func:`join` puts them back together.
    """
    flag = _split_flags(predicate, tree)

    def walk(node, path):
        if not isinstance(node, dict):
            raise TypeError(f"tree: split needs nested dicts, got a {type(node).__name__} at {_path_str(path)}")
        yes, no = {}, {}
        for k, v in node.items():
            p = path + (str(k),)
            if isinstance(v, dict):
                y, n = walk(v, p)
                if y:
                    yes[k] = y
                if n:
                    no[k] = n
            elif not _pytree.tree_is_leaf(v):
                raise TypeError(f"tree: split needs nested dicts, got a {type(v).__name__} at {_path_str(p)}")
            elif flag(p, v):
                yes[k] = v
            else:
                no[k] = v
        return yes, no

    return walk(tree, ())


def join(a: dict, b: dict, like: dict | None = None) -> dict:
    """Merge two disjoint nested-dict trees (the halves from :func:`split`) into one.

    Args:
      a, b: nested dicts with no leaf in common.
      like: optional tree whose key order the result takes (a pytree's
        structure includes the order of dict keys, so pass the original
        params to get a tree of exactly their structure).

    Returns:
      A new nested dict with every leaf of ``a`` and ``b`` (key order: ``a``'s
      keys first, unless ``like`` is given).  A leaf present in both raises
      ``ValueError``.
    """

    def walk(x, y, path):
        if not isinstance(x, dict) or not isinstance(y, dict):
            raise ValueError(f"a, b: both hold {_path_str(path)}; join expects disjoint trees (halves of one split)")
        out = dict(x)
        for k, v in y.items():
            out[k] = walk(x[k], v, path + (str(k),)) if k in x else v
        return out

    def order(x, ref, path):
        if not isinstance(x, dict) or not isinstance(ref, dict):
            return x
        if set(x) != set(ref):
            raise ValueError(f"like: expected the keys {sorted(map(str, x))} at {_path_str(path)}, got {sorted(map(str, ref))}")
        return {k: order(x[k], ref[k], path + (str(k),)) for k in ref}

    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, dict):
            raise TypeError(f"{name}: expected a nested dict, got {type(t).__name__}")
    out = walk(a, b, ())
    return out if like is None else order(out, like, ())


def where(pred: torch.Tensor, on_true: Any, on_false: Any) -> Any:
    """Leaf-wise ``torch.where(pred, on_true, on_false)`` over two pytrees of the same structure.

    The branch-free ``if`` of pure code (``jax.lax.select`` over a tree): pick a
    whole state, params tree or optimizer state by a traced flag without
    ``.item()`` or Python control flow, so it works under ``vmap`` and ``compile``.

    Args:
      pred: bool tensor that broadcasts against every leaf (usually ``()``; a
        leading batch shape selects per row where every leaf starts with it).
      on_true, on_false: pytrees with the same structure; leaves broadcast
        together (same dtype expected: ``torch.where`` promotes otherwise).

    Returns:
      A pytree of the same structure.

    Raises:
      TypeError: ``pred`` is not a bool tensor.
      ValueError: the structures differ (names both).
    """
    if not isinstance(pred, torch.Tensor) or pred.dtype != torch.bool:
        got = f"a {pred.dtype} tensor" if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise TypeError(f"pred: expected a bool tensor, got {got}")
    if structure(on_true) != structure(on_false):
        raise ValueError(f"on_true, on_false: expected the same tree structure, got {structure(on_true)} and "
                         f"{structure(on_false)}")
    return map(lambda a, b: torch.where(pred, a, b), on_true, on_false)


def allclose(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True if the trees have one structure and every pair of leaves is close."""
    if structure(a) != structure(b):
        return False
    return all(torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(leaves(a), leaves(b)))


def equal(a: Any, b: Any) -> bool:
    """True if the trees have one structure and every pair of leaves is identical."""
    if structure(a) != structure(b):
        return False
    return all(
        (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y) for x, y in zip(leaves(a), leaves(b))
    )


def register_dataclass(cls: type, static_fields: Sequence[str] = ()) -> type:
    """Register a dataclass as a pytree node so ``vmap``/``grad``/``compile`` accept it.

    Args:
      cls: a ``dataclasses.dataclass`` type.
      static_fields: fields kept in the tree structure (not leaves), e.g. ints
        that set shapes.

    Returns:
      ``cls`` (so this works as a decorator).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    static = tuple(static_fields)
    for s in static:
        if s not in names:
            raise ValueError(f"static_fields: {s!r} is not a field of {cls.__name__} ({names})")
    data = [n for n in names if n not in static]

    def flatten(obj):
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in static)

    def unflatten_(values, context):
        kwargs = dict(zip(data, values))
        kwargs.update(zip(static, context))
        obj = object.__new__(cls)
        for k, v in kwargs.items():
            object.__setattr__(obj, k, v)
        return obj

    def flatten_with_keys(obj):
        return [(_pytree.GetAttrKey(n), getattr(obj, n)) for n in data], tuple(
            getattr(obj, n) for n in static
        )

    _pytree.register_pytree_node(
        cls,
        flatten,
        unflatten_,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    return cls


def pytree_dataclass(cls: type | None = None, *, frozen: bool = True, static_fields: Sequence[str] = ()):
    """Decorator: make ``cls`` a (frozen) dataclass and register it as a pytree."""

    def wrap(c):
        return register_dataclass(dataclasses.dataclass(frozen=frozen)(c), static_fields)

    return wrap if cls is None else wrap(cls)
