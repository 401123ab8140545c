"""Elementwise losses, gradient clipping and indexing helpers shared by every loss.

Follows rlax's ``clipping.py``, ``losses.py`` and ``base.py``: the same names,
argument order and defaults.  Every function is pure and shape-polymorphic, so
it works unchanged under ``torch.func.vmap``, ``torch.func.grad`` and
``funrl.jit``.
"""

from __future__ import annotations

import torch

from funrl._checks import check_float, check_int, check_tensor

__all__ = [
    "huber_loss",
    "l2_loss",
    "clip_gradient",
    "stop_gradient",
    "one_hot",
    "batched_index",
    "maybe_stop_gradient",
]


def stop_gradient(x: torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass, zero gradient in the backward pass.

    The analogue of ``jax.lax.stop_gradient``; ``x.detach()`` under another name
    so that code ported from rlax reads the same.

    Args:
      x: a tensor of any shape and dtype.

    Returns:
      ``x`` detached from the autograd graph (same shape, dtype, values).
    """
    check_tensor(x, "x")
    return x.detach()


def maybe_stop_gradient(x: torch.Tensor, stop: bool | torch.Tensor) -> torch.Tensor:
    """``stop_gradient(x)`` if ``stop`` else ``x`` (rlax's ``lax.select`` idiom).

    Args:
      x: a tensor.
      stop: a Python bool (the usual case: resolved at trace time) or a bool
        tensor of shape ``()`` (e.g. a vmapped flag), selected with
        ``torch.where`` so no Python branch depends on a tensor value.

    Returns:
      ``x`` with or without gradient.
    """
    if isinstance(stop, torch.Tensor):
        if stop.ndim != 0:
            raise ValueError(f"stop: expected a bool or a tensor of shape (), got shape {tuple(stop.shape)}")
        return torch.where(stop, x.detach(), x)
    if not isinstance(stop, bool):
        raise TypeError(f"stop: expected a bool, got {type(stop).__name__}")
    return x.detach() if stop else x


def huber_loss(x: torch.Tensor, delta: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Huber loss: quadratic near zero, linear away from zero.

    ``0.5 * x**2`` if ``|x| <= delta``, else ``0.5 * delta**2 + delta * (|x| - delta)``.
    Its gradient is ``clip(x, -delta, delta)``, i.e. ``grad(huber_loss(x))`` equals
    ``grad(0.5 * clip_gradient(x, -delta, delta)**2)``.

    See "Robust Estimation of a Location Parameter" by Huber (1964).

    Args:
      x: float tensor of any shape (typically TD errors).
      delta: the transition point, a Python float ``>= 0`` or a float tensor
        broadcastable to ``x`` (e.g. a vmapped hyper-parameter).

    Returns:
      float tensor of ``x``'s shape.
    """
    check_float(x, "x")
    if not isinstance(delta, torch.Tensor):
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            raise TypeError(f"delta: expected a float or a float tensor, got {type(delta).__name__}")
        if delta < 0:
            raise ValueError(f"delta: expected a number >= 0, got {delta}")
    abs_x = torch.abs(x)
    quadratic = torch.minimum(abs_x, torch.as_tensor(delta, dtype=x.dtype, device=x.device))
    # abs_x - quadratic rather than relu(abs_x - delta): at |x| == delta the
    # latter would add a second unit of gradient from the linear branch.
    linear = abs_x - quadratic
    return 0.5 * quadratic**2 + delta * linear


def l2_loss(predictions: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Elementwise L2 loss ``0.5 * (predictions - targets)**2``.

    Without ``targets`` this is an L2 regulariser ``0.5 * predictions**2``.  The
    factor 0.5 follows rlax (and Bishop's PRML), so the gradient is the error.

    Args:
      predictions: float tensor of any shape.
      targets: float tensor broadcastable to ``predictions``, or None (zeros).

    Returns:
      float tensor of the broadcast shape.
    """
    check_float(predictions, "predictions")
    if targets is None:
        return 0.5 * predictions**2
    check_float(targets, "targets")
    try:
        torch.broadcast_shapes(predictions.shape, targets.shape)
    except RuntimeError:
        raise ValueError(
            f"targets: expected a shape broadcastable to predictions' {tuple(predictions.shape)}, "
            f"got {tuple(targets.shape)}"
        ) from None
    return 0.5 * (predictions - targets) ** 2


class _ClipGradient(torch.autograd.Function):
    # setup_context + generate_vmap_rule make the Function usable under
    # torch.func.grad / vmap (functorch rejects the ctx-in-forward style).
    generate_vmap_rule = True

    @staticmethod
    def forward(x, gradient_min, gradient_max):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, gradient_min, gradient_max = inputs
        ctx.save_for_backward(gradient_min, gradient_max)

    @staticmethod
    def backward(ctx, g):
        gradient_min, gradient_max = ctx.saved_tensors
        return torch.minimum(torch.maximum(g, gradient_min), gradient_max), None, None


# Dynamo inlines an autograd.Function's forward and silently drops its custom
# backward when the Function runs under torch.func.grad or vmap inside
# torch.compile (pytorch/pytorch#193279; measured on torch 2.13: unclipped
# gradients from compile(vmap(grad(f))) and from compile(vmap(f)).backward()).
# allow_in_graph keeps the call opaque to Dynamo, so AOTAutograd runs the real
# functorch rules for the Function and the clipped backward is kept.
@torch.compiler.allow_in_graph
def _clip_gradient_apply(x, gradient_min, gradient_max):
    return _ClipGradient.apply(x, gradient_min, gradient_max)


def clip_gradient(
    x: torch.Tensor,
    gradient_min: float | torch.Tensor,
    gradient_max: float | torch.Tensor,
) -> torch.Tensor:
    """Identity in the forward pass; clips the incoming gradient elementwise.

    ``grad(0.5 * clip_gradient(x, -d, d)**2)`` equals ``grad(huber_loss(x, d))``.
    Works with ``Tensor.backward``, ``torch.func.grad``, ``torch.func.vmap`` and
    ``funrl.jit`` in any composition (tested).

    See "Human-level control through deep reinforcement learning" by Mnih et al.
    (https://www.nature.com/articles/nature14236).

    Args:
      x: float tensor of any shape.
      gradient_min: lower bound on each element of the gradient: a Python
        number or a float tensor broadcastable to ``x``.
      gradient_max: upper bound, likewise; ``gradient_min <= gradient_max``
        (checked for Python numbers only).

    Returns:
      a tensor equal to ``x`` whose gradient is ``clamp(g, gradient_min, gradient_max)``.
    """
    check_float(x, "x")
    bounds = []
    for name, b in (("gradient_min", gradient_min), ("gradient_max", gradient_max)):
        if isinstance(b, torch.Tensor):
            check_float(b, name)
        elif isinstance(b, bool) or not isinstance(b, (int, float)):
            raise TypeError(f"{name}: expected a float or a float tensor, got {type(b).__name__}")
        bounds.append(torch.as_tensor(b, dtype=x.dtype, device=x.device))
    if (
        not isinstance(gradient_min, torch.Tensor)
        and not isinstance(gradient_max, torch.Tensor)
        and gradient_min > gradient_max
    ):
        raise ValueError(
            f"gradient_max: expected a value >= gradient_min = {gradient_min}, got {gradient_max}"
        )
    return _clip_gradient_apply(x, bounds[0], bounds[1])


def one_hot(indices: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One-hot encoding that is safe under vmap and compile.

    Unlike ``torch.nn.functional.one_hot`` it does no data-dependent range check
    (which breaks vmap); an index outside ``[0, num_classes)`` gives an all-zero
    row.

    Args:
      indices: integer tensor of any shape.
      num_classes: number of classes ``> 0``.
      dtype: dtype of the result (default: torch's default float dtype).

    Returns:
      ``dtype`` tensor of shape ``indices.shape + (num_classes,)``.
    """
    check_int(indices, "indices")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes: expected an int > 0, got {num_classes!r}")
    classes = torch.arange(num_classes, device=indices.device)
    return (indices.unsqueeze(-1) == classes).to(dtype or torch.get_default_dtype())


def batched_index(values: torch.Tensor, indices: torch.Tensor, keepdims: bool = False) -> torch.Tensor:
    """``values[..., indices]`` along the last axis, one index per leading position.

    rlax's ``batched_index``: for ``values`` of shape ``[..., A]`` and
    ``indices`` of shape ``[...]`` returns ``values[i..., indices[i...]]``.

    Args:
      values: tensor ``[..., A]``.
      indices: integer tensor with ``values``' leading shape ``[...]``; entries
        in ``[0, A)``.  Out-of-range entries raise a RuntimeError in eager CPU
        mode (``torch.gather``'s bounds check) and a device assert on CUDA.
      keepdims: keep the indexed axis with size 1.

    Returns:
      tensor ``[...]`` (or ``[..., 1]`` with ``keepdims``).
    """
    check_tensor(values, "values")
    check_int(indices, "indices")
    if values.ndim != indices.ndim + 1 or tuple(values.shape[:-1]) != tuple(indices.shape):
        raise ValueError(
            f"indices: expected shape {tuple(values.shape[:-1])} (values' shape without its last axis), "
            f"got {tuple(indices.shape)}"
        )
    out = torch.gather(values, -1, indices.long().unsqueeze(-1))
    return out if keepdims else out.squeeze(-1)
