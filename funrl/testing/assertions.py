"""Assertions that check value functions against the Bellman identities.

Each helper raises ``AssertionError`` with the largest violation, where it
occurs (batch, state and action indices), the two values compared and how many
entries fail; it returns ``None`` when the identity holds.  They read tensor
values, so call them in tests, not under ``vmap``/``compile``.

Example::

    from funrl import dp
    from funrl.testing import assert_bellman_optimality

    v = my_value_iteration(P, R, gamma)            # [..., S]
    assert_bellman_optimality(v, P, R, gamma, atol=1e-6)

Values are recognised as state values ``v [..., S]`` or action values
``q [..., S, A]`` from their trailing shape; when ``S == A`` the reading whose
batch rank equals ``P``'s wins.  Pass ``kind="v"`` or ``kind="q"`` to decide
explicitly.
"""

from __future__ import annotations

import torch

from funrl import dp

__all__ = [
    "assert_bellman_expectation",
    "assert_bellman_optimality",
    "assert_contraction",
    "assert_policy_improvement",
]


def _kind(x, P, kind: str, name: str) -> str:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    S, A = P.shape[-3], P.shape[-2]
    if kind not in ("auto", "v", "q"):
        raise ValueError(f"kind: expected 'auto', 'v' or 'q', got {kind!r}")
    if kind == "auto":
        as_q = x.ndim >= 2 and tuple(x.shape[-2:]) == (S, A)
        as_v = x.ndim >= 1 and x.shape[-1] == S
        if as_q and as_v:
            # S == A: prefer the reading whose batch rank matches P's
            return "v" if x.ndim - 1 == P.ndim - 3 else "q"
        if as_q:
            return "q"
        if as_v:
            return "v"
        raise ValueError(
            f"{name}: expected state values (..., {S}) or action values (..., {S}, {A}) "
            f"for P of shape {tuple(P.shape)}, got shape {tuple(x.shape)}"
        )
    return kind


def _fmt_index(idx: tuple, kind: str, ndim: int) -> str:
    names = ["state", "action"] if kind == "q" else ["state"]
    names = ["batch"] * (ndim - len(names)) + names
    return ", ".join(f"{n}={i}" for n, i in zip(names, idx))


def _check_close(lhs: torch.Tensor, rhs: torch.Tensor, kind: str, what: str, atol: float, rtol: float) -> None:
    lhs, rhs = torch.broadcast_tensors(lhs, rhs)
    diff = (lhs - rhs).abs()
    allowed = atol + rtol * rhs.abs()
    excess = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff - allowed)
    failing = excess > 0
    if not bool(failing.any()):
        return
    flat = int(excess.reshape(-1).argmax())
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape))
    raise AssertionError(
        f"{what} violated: max |difference| = {float(diff.reshape(-1)[flat]):.6g} exceeds "
        f"atol={atol:g} + rtol={rtol:g}*|value| at ({_fmt_index(idx, kind, diff.ndim)}): "
        f"{float(lhs[idx]):.10g} vs {float(rhs[idx]):.10g}; "
        f"{int(failing.sum())} of {failing.numel()} entries fail"
    )


def assert_bellman_expectation(value, P, R, gamma, pi, atol: float = 1e-6, rtol: float = 0.0, kind: str = "auto") -> None:
    """Assert ``value`` is the fixed point of the Bellman expectation operator ``T^pi``.

    Checks ``|T^pi value - value| <= atol + rtol |T^pi value|`` elementwise.

    Args:
      value: ``v [..., S]`` or ``q [..., S, A]``.
      P: ``[..., S, A, S]``; R: ``[..., S, A]``; gamma: float or tensor
        broadcastable to the batch; pi: ``[..., S, A]`` policy.
      atol, rtol: tolerances.
      kind: ``"auto"``, ``"v"`` or ``"q"``.

    Raises:
      AssertionError: naming the largest violation and where it occurs.
    """
    k = _kind(value, P, kind, "value")
    if k == "v":
        backup = dp.bellman_expectation_v(value, P, R, gamma, pi)
    else:
        backup = dp.bellman_expectation_q(value, P, R, gamma, pi)
    _check_close(value, backup, k, f"Bellman expectation equation {k} = T^pi {k}", atol, rtol)


def assert_bellman_optimality(value, P, R, gamma, atol: float = 1e-6, rtol: float = 0.0, kind: str = "auto") -> None:
    """Assert ``value`` is the fixed point of the Bellman optimality operator ``T*``.

    Checks ``|T* value - value| <= atol + rtol |T* value|`` elementwise, i.e. that
    ``value`` is ``v*``/``q*`` up to ``atol / (1 - gamma)``.

    Args:
      value: ``v [..., S]`` or ``q [..., S, A]``.
      P: ``[..., S, A, S]``; R: ``[..., S, A]``; gamma: float or tensor
        broadcastable to the batch.
      atol, rtol: tolerances.
      kind: ``"auto"``, ``"v"`` or ``"q"``.

    Raises:
      AssertionError: naming the largest violation and where it occurs.
    """
    k = _kind(value, P, kind, "value")
    if k == "v":
        backup = dp.bellman_optimality_v(value, P, R, gamma)
    else:
        backup = dp.bellman_optimality_q(value, P, R, gamma)
    _check_close(value, backup, k, f"Bellman optimality equation {k} = T* {k}", atol, rtol)


def assert_contraction(operator, P, R, gamma, x, y, atol: float = 1e-9, kind: str = "auto") -> None:
    """Assert ``||T x - T y||_inf <= gamma ||x - y||_inf + atol`` for every MDP in the batch.

    Args:
      operator: ``operator(value, P, R, gamma) -> value`` of the same shape, e.g.
        ``funrl.dp.bellman_optimality_v`` or
        ``functools.partial(funrl.dp.bellman_expectation_q, pi=pi)``.
      P: ``[..., S, A, S]``; R: ``[..., S, A]``; gamma: float or tensor
        broadcastable to the batch.
      x, y: two value tables (``[..., S]`` or ``[..., S, A]``).
      atol: slack for rounding.
      kind: ``"auto"``, ``"v"`` or ``"q"``.

    Raises:
      AssertionError: naming the MDP with the largest violation and both sides.
    """
    if not callable(operator):
        raise TypeError(f"operator: expected a callable, got {type(operator).__name__}")
    k = _kind(x, P, kind, "x")
    _kind(y, P, k, "y")
    axes = (-1,) if k == "v" else (-2, -1)
    tx, ty = operator(x, P, R, gamma), operator(y, P, R, gamma)
    out = (tx - ty).abs().amax(axes)
    inp = (x - y).abs().amax(axes)
    g = torch.as_tensor(gamma, dtype=out.dtype, device=out.device)
    out, inp, g = torch.broadcast_tensors(out, inp, g)
    bound = g * inp + atol
    excess = out - bound
    if bool((excess > 0).any()):
        flat = int(excess.reshape(-1).argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), out.shape))
        raise AssertionError(
            f"contraction violated at batch index {idx}: ||T x - T y||_inf = {float(out[idx]):.6g} > "
            f"gamma * ||x - y||_inf + atol = {float(g[idx]):g} * {float(inp[idx]):.6g} + {atol:g} "
            f"(ratio {float(out[idx]) / max(float(inp[idx]), 1e-300):.6g}); "
            f"{int((excess > 0).sum())} of {excess.numel()} MDPs fail"
        )


def assert_policy_improvement(P, R, gamma, pi, new_pi=None, atol: float = 1e-8) -> None:
    """Assert ``V^{new_pi} >= V^pi - atol`` elementwise (the policy improvement theorem).

    Args:
      P: ``[..., S, A, S]``; R: ``[..., S, A]``; gamma: float < 1 or tensor
        broadcastable to the batch.
      pi: ``[..., S, A]`` the old policy.
      new_pi: ``[..., S, A]`` the candidate improvement; default: greedy in
        ``Q^pi`` (what policy iteration would pick).
      atol: slack for rounding.

    Raises:
      AssertionError: naming the state where ``new_pi`` is worse and both values.
    """
    v_old = dp.policy_evaluation(P, R, gamma, pi)
    if new_pi is None:
        new_pi = dp.greedy_policy(dp.q_from_v(v_old, P, R, gamma))
    v_new = dp.policy_evaluation(P, R, gamma, new_pi)
    v_new, v_old = torch.broadcast_tensors(v_new, v_old)
    excess = v_old - v_new - atol
    if bool((excess > 0).any()):
        flat = int(excess.reshape(-1).argmax())
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), excess.shape))
        raise AssertionError(
            f"policy improvement violated: V^new_pi < V^pi - atol at ({_fmt_index(idx, 'v', excess.ndim)}): "
            f"{float(v_new[idx]):.10g} < {float(v_old[idx]):.10g} (atol={atol:g}); "
            f"{int((excess > 0).sum())} of {excess.numel()} states are worse"
        )
