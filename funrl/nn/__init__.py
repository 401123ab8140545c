"""Functional neural networks: parameters are plain nested dicts of tensors.

A network is a :class:`Model`, a pair of pure functions::

    model = funrl.nn.mlp([4, 64, 64, 2], activation="tanh",
                         w_init=funrl.nn.orthogonal(math.sqrt(2)),
                         b_init=funrl.nn.zeros,
                         final_w_init=funrl.nn.orthogonal(0.01))
    params = model.init(key)                  # {"linear_0": {"weight", "bias"}, ...}
    y = model.apply(params, x)                # x (..., 4) -> y (..., 2)

    params = torch.func.vmap(model.init)(funrl.random.split(key, S))   # S seeds
    ys = torch.func.vmap(model.apply)(params, xs)

Initialisers take ``(key, shape, dtype=torch.float32)`` and draw only from
funrl keys (never torch's global RNG).  Fan-in and fan-out follow torch's
convention: a weight of shape ``(out, in, *kernel)`` has
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

Parameter names follow ``torch.nn`` (``weight`` and ``bias``) so weights copy
to and from ``torch.nn.Linear`` / ``torch.nn.LayerNorm`` without renaming; an
MLP names its layers ``linear_0, linear_1, ...`` (and ``layer_norm_0, ...``).
These names are the checkpoint format.

:func:`from_module` turns any ``torch.nn.Module`` into ``(params, apply)``.

Transformers and fine-tuning (submodules, their main names re-exported here):
:func:`transformer` (decoder-only LM with a KV cache), :func:`encoder_decoder`,
:func:`from_gpt2` (``funrl/nn/transformer.py``; the module itself is
``sys.modules["funrl.nn.transformer"]`` since the name ``funrl.nn.transformer``
is the function), :mod:`funrl.nn.lora` (LoRA as a transform of a params tree)
and :mod:`funrl.nn.pruning` (magnitude masks, sparse training).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from funrl import ops
from funrl import random as jr
from funrl._checks import check_tensor

__all__ = [
    "Model",
    "Initializer",
    "activation",
    "ACTIVATIONS",
    "fans",
    "variance_scaling",
    "orthogonal",
    "lecun_normal",
    "lecun_uniform",
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "normal",
    "uniform",
    "zeros",
    "ones",
    "constant",
    "torch_default_linear",
    "Linear",
    "LayerNorm",
    "mlp",
    "linear",
    "from_module",
    "transformer",
    "encoder_decoder",
    "Transformer",
    "EncoderDecoder",
    "TransformerConfig",
    "attention",
    "rotary",
    "from_gpt2",
    "lora",
    "pruning",
]

#: An initialiser: ``init(key, shape, dtype=torch.float32) -> tensor of shape``.
Initializer = Callable[..., torch.Tensor]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class Model(NamedTuple):
    """A functional network: ``init(key) -> params`` and ``apply(params, x) -> y``.

    Both are pure: ``init`` draws only from its key, ``apply`` never mutates
    ``params`` or ``x``.  ``vmap(init)(keys)`` gives stacked params for many
    seeds; ``vmap(apply)(stacked_params, xs)`` runs them all.
    """

    init: Callable[[torch.Tensor], Any]
    apply: Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------- activations
def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


#: Names accepted by :func:`activation` and :func:`mlp`.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": ops.gelu,
    "elu": F.elu,
    "silu": ops.silu,
    "sigmoid": ops.sigmoid,
    "identity": _identity,
    "leaky_relu": F.leaky_relu,
    "softplus": ops.softplus,
}


def activation(name: str | Callable | None, arg_name: str = "activation") -> Callable[[torch.Tensor], torch.Tensor]:
    """The element-wise function called ``name``.

    Args:
      name: one of :data:`ACTIVATIONS` (``relu, tanh, gelu, elu, silu,
        sigmoid, identity, leaky_relu, softplus``); a callable is returned as
        is and ``None`` means identity.
      arg_name: the argument name used in error messages.

    Returns:
      A function ``tensor -> tensor`` of the same shape.

    Raises:
      ValueError: for an unknown name (the message lists the allowed names).
    """
    if name is None:
        return _identity
    if callable(name):
        return name
    if isinstance(name, str) and name in ACTIVATIONS:
        return ACTIVATIONS[name]
    raise ValueError(f"{arg_name}: expected one of {sorted(ACTIVATIONS)} or a callable, got {name!r}")


_activation_fn = activation  # mlp's argument named ``activation`` shadows the function


# ----------------------------------------------------------------------------- initialisers
def _check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"{name}: expected a tuple of non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype (one of {_FLOAT_DTYPES}), got {dtype}")
    return dtype


def _number(value, name: str, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a number {bound}, got {value}")
    return float(value)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of ``shape``, torch's convention.

    Args:
      shape: ``(out, in, *receptive_field)`` with at least two dims.

    Returns:
      ``(in * prod(receptive_field), out * prod(receptive_field))``.

    Raises:
      ValueError: if ``shape`` has fewer than two dims.
    """
    shape = _check_shape(shape)
    if len(shape) < 2:
        raise ValueError(
            f"shape: fan-in/fan-out need a weight shape with at least 2 dims (out, in, ...), got {shape}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


_TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def variance_scaling(scale: float, mode: str = "fan_in", distribution: str = "normal") -> Initializer:
    """Initialiser with variance ``scale / n``, ``n`` = fan-in, fan-out or their mean.

    Args:
      scale: variance multiplier (> 0).
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"normal"`` (plain normal, as torch's ``kaiming_normal_``
        and ``xavier_normal_``), ``"truncated_normal"`` (truncated to two
        standard deviations and rescaled to keep the variance, as JAX) or
        ``"uniform"`` (``U(-sqrt(3 var), sqrt(3 var))``).

    Returns:
      ``init(key, shape, dtype=torch.float32)``; ``shape`` needs >= 2 dims.
    """
    scale = _number(scale, "scale", positive=True, allow_zero=False)
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"mode: expected one of ['fan_in', 'fan_out', 'fan_avg'], got {mode!r}")
    if distribution not in ("normal", "truncated_normal", "uniform"):
        raise ValueError(
            f"distribution: expected one of ['normal', 'truncated_normal', 'uniform'], got {distribution!r}"
        )

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = _check_shape(shape)
        dtype = _check_dtype(dtype)
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / max(1.0, n)
        if distribution == "normal":
            return jr.normal(key, shape, dtype) * math.sqrt(var)
        if distribution == "truncated_normal":
            return jr.truncated_normal(key, -2.0, 2.0, shape, dtype) * (math.sqrt(var) / _TRUNC_STD)
        bound = math.sqrt(3.0 * var)
        return jr.uniform(key, shape, dtype, -bound, bound)

    return init


def lecun_normal() -> Initializer:
    """Normal with variance ``1 / fan_in`` (``init(key, shape, dtype)``)."""
    return variance_scaling(1.0, "fan_in", "normal")


def lecun_uniform() -> Initializer:
    """Uniform with variance ``1 / fan_in``: bound ``sqrt(3 / fan_in)``."""
    return variance_scaling(1.0, "fan_in", "uniform")


def he_normal() -> Initializer:
    """Normal with variance ``2 / fan_in`` (torch's ``kaiming_normal_`` for relu)."""
    return variance_scaling(2.0, "fan_in", "normal")


def he_uniform() -> Initializer:
    """Uniform with variance ``2 / fan_in``: bound ``sqrt(6 / fan_in)`` (``kaiming_uniform_``, relu)."""
    return variance_scaling(2.0, "fan_in", "uniform")


def glorot_normal() -> Initializer:
    """Normal with variance ``2 / (fan_in + fan_out)`` (torch's ``xavier_normal_``)."""
    return variance_scaling(1.0, "fan_avg", "normal")


def glorot_uniform() -> Initializer:
    """Uniform with variance ``2 / (fan_in + fan_out)`` (torch's ``xavier_uniform_``)."""
    return variance_scaling(1.0, "fan_avg", "uniform")


def orthogonal(gain: float = 1.0) -> Initializer:
    """(Semi-)orthogonal initialiser, as ``torch.nn.init.orthogonal_``.

    The weight is viewed as a matrix ``(shape[0], prod(shape[1:]))``; a standard
    normal matrix of that shape (transposed if wide) is QR-decomposed and the
    columns of ``Q`` are multiplied by ``sign(diag(R))`` so the result is
    uniformly (Haar) distributed.  ``W W^T = gain^2 I`` when ``shape[0] <=
    prod(shape[1:])`` and ``W^T W = gain^2 I`` otherwise.

    Args:
      gain: multiplier (>= 0); CleanRL uses ``sqrt(2)`` for hidden layers and
        ``0.01`` / ``1.0`` for actor / critic heads.

    Returns:
      ``init(key, shape, dtype=torch.float32)``; ``shape`` needs >= 2 dims.
    """
    gain = _number(gain, "gain", positive=True)

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = _check_shape(shape)
        dtype = _check_dtype(dtype)
        if len(shape) < 2:
            raise ValueError(f"shape: orthogonal needs a shape with at least 2 dims, got {shape}")
        rows = shape[0]
        cols = math.prod(shape[1:])
        if rows * cols == 0:
            return jr.normal(key, shape, dtype)
        # QR is only implemented for float32/float64
        work = torch.float64 if dtype == torch.float64 else torch.float32
        a = jr.normal(key, (max(rows, cols), min(rows, cols)), work)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
        if rows < cols:
            q = q.transpose(0, 1)
        return (gain * q).reshape(shape).to(dtype)

    return init


def normal(std: float = 1e-2) -> Initializer:
    """Normal ``N(0, std^2)`` initialiser (any shape)."""
    std = _number(std, "std", positive=True)

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return jr.normal(key, _check_shape(shape), _check_dtype(dtype)) * std

    return init


def uniform(scale: float = 1e-2) -> Initializer:
    """Uniform ``U[-scale, scale)`` initialiser (any shape).

    Note: symmetric around zero (as DDPG's ``U(-3e-3, 3e-3)`` output layers),
    unlike ``jax.nn.initializers.uniform`` which samples ``[0, scale)``.
    """
    scale = _number(scale, "scale", positive=True)

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return jr.uniform(key, _check_shape(shape), _check_dtype(dtype), -scale, scale)

    return init


def constant(value: float) -> Initializer:
    """Initialiser filling every entry with ``value`` (any shape; the key is unused)."""
    value = _number(value, "value")

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        k = jr._check_key(key)
        # new_full on the key is batched under vmap, so stacked params come out
        # contiguous rather than as a stride-0 broadcast
        return k.new_full(_check_shape(shape), value, dtype=_check_dtype(dtype))

    return init


_zeros_init = constant(0.0)
_ones_init = constant(1.0)


def zeros(key: torch.Tensor | None = None, shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32):
    """All-zeros initialiser.

    ``zeros`` is itself an initialiser (``zeros(key, shape, dtype)`` returns a
    tensor of ``shape`` on the key's device), and ``zeros()`` returns it, so both
    ``b_init=zeros`` and ``b_init=zeros()`` work.
    """
    if key is None and shape is None:
        return zeros
    if shape is None:
        raise ValueError("shape: expected a tuple of non-negative ints, got None")
    return _zeros_init(key, shape, dtype)


def ones(key: torch.Tensor | None = None, shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32):
    """All-ones initialiser; like :func:`zeros`, both ``ones`` and ``ones()`` are initialisers."""
    if key is None and shape is None:
        return ones
    if shape is None:
        raise ValueError("shape: expected a tuple of non-negative ints, got None")
    return _ones_init(key, shape, dtype)


def torch_default_linear(fan_in: int | None = None) -> Initializer:
    """What ``torch.nn.Linear`` does: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    torch initialises the weight with ``kaiming_uniform_(a=sqrt(5))``, whose
    bound is ``gain * sqrt(3 / fan_in)`` with ``gain = sqrt(2 / (1 + 5))``,
    i.e. exactly ``1 / sqrt(fan_in)``; the bias uses the same bound with the
    weight's fan-in.

    Args:
      fan_in: ``None`` to take the fan-in from the weight's shape (use for
        weights); the layer's ``in_features`` for its bias (whose own shape
        ``(out,)`` does not tell it).

    Returns:
      ``init(key, shape, dtype=torch.float32)``.
    """
    if fan_in is not None:
        if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 0:
            raise ValueError(f"fan_in: expected a non-negative int or None, got {fan_in!r}")

    def init(key: torch.Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        shape = _check_shape(shape)
        n = fans(shape)[0] if fan_in is None else fan_in
        bound = 1.0 / math.sqrt(n) if n > 0 else 0.0
        return jr.uniform(key, shape, _check_dtype(dtype), -bound, bound)

    return init


# ----------------------------------------------------------------------------- modules
def _lora_delta(params: dict, x: torch.Tensor) -> torch.Tensor | None:
    """The LoRA path ``scale * dropout(x) A^T B^T`` of a linear layer, or ``None``.

    ``params`` is a linear layer's dict; :func:`funrl.nn.lora.apply` adds a
    ``"lora"`` entry ``{"a": (r, in), "b": (out, r), "scale": float,
    "dropout": float, "key": key or None}`` to the layers it targets.  The
    entry exists only inside ``lora.apply`` (it is never part of a params tree
    a user holds), so Python numbers there are fine.  ``x (..., in) -> (..., out)``.
    """
    lo = params.get("lora")
    if lo is None:
        return None
    h = x
    if lo["dropout"] > 0.0:
        # inverted dropout on the adapter's input, as peft's lora_dropout
        keep = jr.bernoulli(lo["key"], 1.0 - lo["dropout"], tuple(x.shape))
        h = torch.where(keep, x / (1.0 - lo["dropout"]), torch.zeros_like(x))
    return ((h @ lo["a"].transpose(-2, -1)) @ lo["b"].transpose(-2, -1)) * lo["scale"]


def linear(params: dict, x: torch.Tensor) -> torch.Tensor:
    """Functional ``torch.nn.Linear``: ``y = x W^T + b``, plus LoRA's path if present.

    Args:
      params: ``{"weight": (out, in), ["bias": (out,)]}`` (torch's layout),
        possibly with a ``"lora"`` entry added by :func:`funrl.nn.lora.apply`
        (see ``_lora_delta``).
      x: ``(..., in)``.

    Returns:
      ``(..., out)``.  Every funrl layer (transformer projections, MLP layers)
      goes through this one function, which is how unmerged LoRA reaches them.
    """
    y = F.linear(x, params["weight"], params.get("bias"))
    delta = _lora_delta(params, x)
    return y if delta is None else y + delta


def _check_features(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: expected a positive int, got {n!r}")
    return n


def _check_init(f, name: str):
    if not callable(f):
        raise TypeError(f"{name}: expected an initialiser init(key, shape, dtype), got {type(f).__name__}")
    return f


def _check_input(x, size: int, name: str = "x", weight=None, weight_name: str = "params['weight']") -> torch.Tensor:
    check_tensor(x, name)
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected shape (..., {size}), got {tuple(x.shape)}")
    if isinstance(weight, torch.Tensor) and x.dtype != weight.dtype:
        # torch would raise deep inside a matmul, or silently promote in the multiply-sum path
        raise TypeError(
            f"{name}: expected dtype {weight.dtype} (the dtype of {weight_name}), got {x.dtype}; "
            f"cast the input with x.to({weight.dtype}) or build the model with dtype={x.dtype}"
        )
    return x


#: Linear layers with at most this many outputs use a multiply-sum (see Linear.apply).
_SMALL_OUT = 4


def Linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    w_init: Initializer | None = None,
    b_init: Initializer | None = None,
    dtype: torch.dtype = torch.float32,
) -> Model:
    """Affine layer ``y = x W^T + b``, as ``torch.nn.Linear``.

    Args:
      in_features, out_features: sizes (positive ints).
      bias: whether to learn a bias.
      w_init: weight initialiser for shape ``(out, in)``; default
        :func:`torch_default_linear` (torch's own default).
      b_init: bias initialiser for shape ``(out,)``; default torch's
        ``U(-1/sqrt(in), 1/sqrt(in))``.
      dtype: parameter dtype.

    Returns:
      :class:`Model` with params ``{"weight": (out, in), "bias": (out,)}``
      (no ``"bias"`` if ``bias=False``) and ``apply(params, x)`` mapping
      ``x (..., in)`` to ``(..., out)``.
    """
    in_features = _check_features(in_features, "in_features")
    out_features = _check_features(out_features, "out_features")
    w_init = _check_init(w_init if w_init is not None else torch_default_linear(), "w_init")
    b_init = _check_init(b_init if b_init is not None else torch_default_linear(in_features), "b_init")
    _check_dtype(dtype)

    def init(key: torch.Tensor) -> dict:
        kw, kb = jr.split(key)
        params = {"weight": w_init(kw, (out_features, in_features), dtype)}
        if bias:
            params["bias"] = b_init(kb, (out_features,), dtype)
        return params

    def apply(params: dict, x: torch.Tensor) -> torch.Tensor:
        w, b = params["weight"], params.get("bias")
        _check_input(x, in_features, weight=w)
        if out_features <= _SMALL_OUT:
            # Why: with 1-4 outputs (value heads, small action spaces) an unbatched
            # matmul dispatches to a gemv kernel but a vmapped one to batched gemm,
            # and the two round differently; a broadcast multiply-sum reduces in the
            # same order either way, so vmap(train)(keys)[i] == train(keys[i]) bit
            # for bit.  It costs out_features x the input's memory, small here.
            y = (x[..., None, :] * w).sum(-1)
            y = y if b is None else y + b
            delta = _lora_delta(params, x)
            return y if delta is None else y + delta
        return linear(params, x)

    apply.supports_lora = True
    return Model(init, apply)


def LayerNorm(
    size: int | Sequence[int],
    eps: float = 1e-5,
    elementwise_affine: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Model:
    """Layer normalisation over the trailing ``size`` dims, as ``torch.nn.LayerNorm``.

    Args:
      size: normalised shape (int or tuple of the trailing dims).
      eps: added to the variance (> 0).
      elementwise_affine: learn ``weight`` (init 1) and ``bias`` (init 0).
      dtype: parameter dtype.

    Returns:
      :class:`Model`; params ``{"weight": size, "bias": size}`` (``{}`` without
      affine); ``apply(params, x)`` keeps ``x``'s shape ``(..., *size)``.
    """
    shape = _check_shape(size, "size")
    if len(shape) == 0 or 0 in shape:
        raise ValueError(f"size: expected a positive int or a tuple of positive ints, got {size!r}")
    eps = _number(eps, "eps", positive=True, allow_zero=False)
    _check_dtype(dtype)

    def init(key: torch.Tensor) -> dict:
        if not elementwise_affine:
            jr._check_key(key)
            return {}
        return {"weight": _ones_init(key, shape, dtype), "bias": _zeros_init(key, shape, dtype)}

    def apply(params: dict, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ValueError(f"x: expected shape (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        return F.layer_norm(x, shape, params.get("weight"), params.get("bias"), eps)

    return Model(init, apply)


def mlp(
    sizes: Sequence[int],
    activation: str | Callable = "relu",
    output_activation: str | Callable | None = None,
    w_init: Initializer | None = None,
    b_init: Initializer | None = None,
    final_w_init: Initializer | None = None,
    final_b_init: Initializer | None = None,
    layer_norm: bool = False,
    bias: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Model:
    """Multi-layer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Each hidden layer is ``Linear -> [LayerNorm] -> activation``; the last is
    ``Linear -> output_activation``.

    Args:
      sizes: layer widths including input and output, e.g. ``[4, 64, 64, 2]``.
      activation: hidden activation, a name (see :func:`activation`) or callable.
      output_activation: applied to the output (``None``: identity).
      w_init, b_init: initialisers for every layer (default torch's
        ``nn.Linear`` init).
      final_w_init, final_b_init: override for the last layer (default
        ``w_init`` / ``b_init``).  CleanRL's PPO actor is
        ``mlp(..., w_init=orthogonal(sqrt(2)), b_init=zeros, final_w_init=orthogonal(0.01))``.
      layer_norm: add a LayerNorm after every hidden Linear.
      bias: give the Linear layers biases.
      dtype: parameter dtype.

    Returns:
      :class:`Model` with params ``{"linear_0": {...}, ["layer_norm_0": {...},]
      "linear_1": ..., ...}`` and ``apply(params, x)``: ``(..., sizes[0]) ->
      (..., sizes[-1])``.
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes: expected a sequence of at least 2 positive ints, got {sizes!r}")
    sizes = [_check_features(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
    act = _activation_fn(activation, "activation")
    out_act = _activation_fn(output_activation, "output_activation")
    n = len(sizes) - 1
    layers = []
    for i in range(n):
        last = i == n - 1
        wi = final_w_init if (last and final_w_init is not None) else w_init
        bi = final_b_init if (last and final_b_init is not None) else b_init
        layers.append(Linear(sizes[i], sizes[i + 1], bias=bias, w_init=wi, b_init=bi, dtype=dtype))
    norms = [LayerNorm(sizes[i + 1], dtype=dtype) for i in range(n - 1)] if layer_norm else []

    def init(key: torch.Tensor) -> dict:
        keys = jr.split(key, n)
        params = {}
        for i, layer in enumerate(layers):
            params[f"linear_{i}"] = layer.init(keys[i])
            if layer_norm and i < n - 1:
                params[f"layer_norm_{i}"] = norms[i].init(keys[i])
        return params

    def apply(params: dict, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, sizes[0], weight=params["linear_0"]["weight"], weight_name="params['linear_0']['weight']")
        for i, layer in enumerate(layers):
            x = layer.apply(params[f"linear_{i}"], x)
            if i < n - 1:
                if layer_norm:
                    x = norms[i].apply(params[f"layer_norm_{i}"], x)
                x = act(x)
        return out_act(x)

    apply.supports_lora = True
    return Model(init, apply)


# ----------------------------------------------------------------------------- torch.nn bridge
def from_module(module: torch.nn.Module) -> tuple[dict, Callable[..., Any]]:
    """Turn a ``torch.nn.Module`` into ``(params, apply)``.

    Args:
      module: any module; it is never modified.

    Returns:
      ``params``: a flat dict ``name -> tensor`` of every parameter and buffer
      under its ``named_parameters`` / ``named_buffers`` name, the names of
      ``module.state_dict()`` (``"0.weight"``, ...),
      detached copies (no ``requires_grad``, no shared storage).
      ``apply(params, *args, **kwargs)``: calls the module's ``forward`` with
      ``params`` swapped in (``torch.func.functional_call``), so it works under
      ``grad``, ``vmap`` (stack params over a leading axis) and ``compile``.

    The module is copied with its tensors on the ``meta`` device (no data is
    duplicated), keeping its ``training`` flag.  Call ``module.eval()``
    first if it holds dropout or batch-norm: dropout uses torch's global RNG
    and batch-norm in training mode updates its running statistics in place,
    i.e. it would write into the ``params`` you pass.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    params = {}
    for name, p in module.named_parameters():
        params[name] = p.detach().clone()
    for name, b in module.named_buffers():
        params[name] = b.detach().clone()
    # pre-seeding deepcopy's memo with meta tensors copies the module's
    # structure without its data and keeps tied weights tied
    memo: dict = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    skeleton = copy.deepcopy(module, memo)

    def apply(params: dict, *args, **kwargs):
        return torch.func.functional_call(skeleton, params, args, kwargs)

    return params, apply


# submodules that build on the names above (imported last: they import funrl.nn)
from funrl.nn import lora, pruning  # noqa: E402
from funrl.nn.transformer import (  # noqa: E402
    EncoderDecoder,
    Transformer,
    TransformerConfig,
    attention,
    encoder_decoder,
    from_gpt2,
    rotary,
    transformer,
)
