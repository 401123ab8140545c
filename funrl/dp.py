"""Exact dynamic programming for finite MDPs: Bellman backups, policy evaluation,
value iteration and policy iteration, batched over any number of MDPs.

An MDP is given by tensors

* ``P[..., s, a, s']``: transition probabilities, row-stochastic over ``s'``
  (``P.sum(-1) == 1``); absorbing terminal states are self-loops;
* ``R[..., s, a]``: expected immediate reward;
* ``gamma``: a discount, a Python float or a tensor broadcastable to the batch
  shape ``...`` (one discount per MDP).

``...`` is any number of leading MDP axes; ``P`` and ``R`` batch shapes (and
``gamma``'s) broadcast against each other, so one ``P`` can be shared by many
reward tables.  Values are ``v[..., s]`` and ``q[..., s, a]``; policies are
``pi[..., s, a]`` (rows are action distributions; a deterministic policy is
one-hot).  Everything runs on the device and in the floating dtype of ``P``
(``float32`` or ``float64``; ``R``, ``v``, ``q`` and ``pi`` must match it).

Which functions compose with ``torch.func.vmap`` and ``torch.compile``:

* pure, vmappable, compilable: the Bellman operators, :func:`q_from_v`,
  :func:`v_from_q`, :func:`greedy_actions`, :func:`greedy_policy`,
  :func:`policy_evaluation` with ``method="exact"`` and
  :func:`value_iteration_fixed`;
* host loops that stop when converged (one host synchronisation per check, so
  not vmappable): :func:`value_iteration`, :func:`policy_iteration` and
  :func:`policy_evaluation` with ``method="iterative"``.  They accept a batch of
  MDPs directly, which is how to run many MDPs at once.

Argument checks look only at shapes and dtypes.  Values (row sums, the range of
a tensor ``gamma``) are checked by :func:`check_mdp`, which the host loops call
unless ``validate=False``; the vmappable functions cannot check values, and a
``P`` that is not row-stochastic simply gives the Bellman backup of that matrix.

References: Puterman, *Markov Decision Processes* (1994), chapter 6; Sutton &
Barto, *Reinforcement Learning: An Introduction* (2018), chapter 4.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from funrl._checks import check_float, check_in_range, check_positive, check_tensor

__all__ = [
    "ValueIterationResult",
    "check_mdp",
    "q_from_v",
    "v_from_q",
    "greedy_actions",
    "greedy_policy",
    "bellman_expectation_v",
    "bellman_expectation_q",
    "bellman_optimality_v",
    "bellman_optimality_q",
    "policy_evaluation",
    "value_iteration",
    "value_iteration_fixed",
    "policy_iteration",
]


class ValueIterationResult(NamedTuple):
    """Solution of an MDP (returned by the value and policy iteration functions).

    Attributes:
      v: ``[..., S]`` state values.
      q: ``[..., S, A]`` action values, ``q = R + gamma * P v_prev`` for the
        last backup; ``v == q.amax(-1)`` for value iteration.
      policy: ``[..., S, A]`` one-hot greedy policy in the dtype of ``q``.
      iterations: ``int64 [...]`` Bellman sweeps (value iteration) or policy
        evaluations (policy iteration) spent on each MDP.
    """

    v: torch.Tensor
    q: torch.Tensor
    policy: torch.Tensor
    iterations: torch.Tensor


# ----------------------------------------------------------------------------- checks
def _shape(x) -> tuple:
    return tuple(x.shape)


def _check_mdp_shapes(P, R, gamma) -> tuple[int, int, tuple]:
    """Check metadata of ``P``, ``R`` and ``gamma``; return ``(S, A, batch_shape)``."""
    check_float(P, "P")
    if P.ndim < 3:
        raise ValueError(
            f"P: expected shape (..., S, A, S) with rank >= 3, got shape {_shape(P)}"
        )
    S, A = P.shape[-3], P.shape[-2]
    if P.shape[-1] != S:
        raise ValueError(
            f"P: expected shape (..., S, A, S) with the last axis (next state) of size "
            f"S={S} like axis -3, got shape {_shape(P)}"
        )
    check_float(R, "R")
    if R.ndim < 2 or _shape(R)[-2:] != (S, A):
        raise ValueError(
            f"R: expected shape (..., {S}, {A}) (states and actions of P, whose shape is "
            f"{_shape(P)}), got shape {_shape(R)}"
        )
    if R.dtype != P.dtype:
        raise TypeError(f"R: expected dtype {P.dtype} (the dtype of P), got {R.dtype}")
    try:
        batch = tuple(torch.broadcast_shapes(P.shape[:-3], R.shape[:-2]))
    except RuntimeError:
        raise ValueError(
            f"R: expected a batch shape that broadcasts with P's batch shape "
            f"{_shape(P)[:-3]}, got R of shape {_shape(R)} (batch shape {_shape(R)[:-2]})"
        ) from None
    return S, A, _check_gamma(gamma, batch, P.dtype)


def _check_gamma(gamma, batch: tuple, dtype) -> tuple:
    """Check ``gamma``'s type/shape; return the batch shape broadcast with gamma's."""
    if isinstance(gamma, torch.Tensor):
        check_float(gamma, "gamma")
        try:
            return tuple(torch.broadcast_shapes(gamma.shape, batch))
        except RuntimeError:
            raise ValueError(
                f"gamma: expected a float or a tensor broadcastable to the MDP batch shape "
                f"{batch}, got a tensor of shape {_shape(gamma)}"
            ) from None
    check_in_range(gamma, 0.0, 1.0, "gamma")
    return batch


def _check_same_dtype(x, name: str, P) -> None:
    check_float(x, name)
    if x.dtype != P.dtype:
        raise TypeError(f"{name}: expected dtype {P.dtype} (the dtype of P), got {x.dtype}")


def _check_v(v, S: int, P, name: str = "v") -> None:
    check_tensor(v, name)
    if v.ndim < 1 or v.shape[-1] != S:
        raise ValueError(
            f"{name}: expected shape (..., {S}) (one value per state of P, whose shape is "
            f"{_shape(P)}), got shape {_shape(v)}"
        )
    _check_same_dtype(v, name, P)


def _check_sa(x, S: int, A: int, P, name: str) -> None:
    check_tensor(x, name)
    if x.ndim < 2 or _shape(x)[-2:] != (S, A):
        raise ValueError(
            f"{name}: expected shape (..., {S}, {A}) (states and actions of P, whose shape "
            f"is {_shape(P)}), got shape {_shape(x)}"
        )
    _check_same_dtype(x, name, P)


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _gamma_for(gamma, trailing: int):
    """``gamma`` with ``trailing`` singleton axes appended so it broadcasts over the batch."""
    if isinstance(gamma, torch.Tensor):
        return gamma.reshape(gamma.shape + (1,) * trailing)
    return gamma


def check_mdp(P: torch.Tensor, R: torch.Tensor, gamma, atol: float | None = None) -> None:
    """Check the *values* of an MDP; raise ``ValueError`` naming the first problem.

    Checks that ``P`` and ``R`` are finite, ``P >= 0``, every row ``P[..., s, a, :]``
    sums to 1 within ``atol``, and ``0 <= gamma <= 1``.  Reads tensor values (one
    host synchronisation), so it cannot run under ``vmap``/``compile``; the host
    loops (:func:`value_iteration`, :func:`policy_iteration`, iterative
    :func:`policy_evaluation`) call it unless given ``validate=False``.

    Args:
      P: ``[..., S, A, S]`` transition probabilities.
      R: ``[..., S, A]`` rewards.
      gamma: float or tensor broadcastable to the batch shape.
      atol: allowed ``|row sum - 1|``; default ``sqrt(eps)`` of ``P.dtype``
        (``1.5e-8`` for float64, ``3.5e-4`` for float32).
    """
    _check_mdp_shapes(P, R, gamma)
    if atol is None:
        atol = math.sqrt(torch.finfo(P.dtype).eps)
    if not bool(torch.isfinite(R).all()):
        raise ValueError("R: expected finite rewards, got NaN or inf")
    if P.numel() == 0:
        return
    # Two passes over P: a row sum is finite and near 1 only if its entries are finite.
    err = (P.sum(-1) - 1).abs()
    bad = ~(err <= atol)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.unravel_index(bad.to(torch.uint8).argmax(), err.shape))
        raise ValueError(
            f"P: expected finite rows P[..., s, a, :] summing to 1 (row-stochastic) within "
            f"atol={atol:.2g}, got row {idx} summing to {float(P[idx].sum()):.10g}"
        )
    if float(P.amin()) < 0:
        idx = tuple(int(i) for i in torch.unravel_index(P.argmin(), P.shape))
        raise ValueError(
            f"P: expected non-negative probabilities, got P[{idx}] = {float(P[idx]):.6g}"
        )
    if isinstance(gamma, torch.Tensor) and gamma.numel():
        if not bool(torch.isfinite(gamma).all()) or float(gamma.amin()) < 0 or float(gamma.amax()) > 1:
            raise ValueError(
                f"gamma: expected discounts in [0, 1], got values in "
                f"[{float(gamma.amin()):.6g}, {float(gamma.amax()):.6g}]"
            )


# -------------------------------------------------------------------- basic backups
def _expected_next(P: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_s' P[..., s, a, s'] v[..., s']`` -> ``[..., S, A]`` (batch axes broadcast)."""
    return torch.einsum("...sat,...t->...sa", P, v)


def q_from_v(v: torch.Tensor, P: torch.Tensor, R: torch.Tensor, gamma) -> torch.Tensor:
    """One-step look-ahead: ``q[..., s, a] = R[s, a] + gamma * sum_s' P[s, a, s'] v[s']``.

    Args:
      v: ``[..., S]`` state values.
      P: ``[..., S, A, S]`` transition probabilities.
      R: ``[..., S, A]`` rewards.
      gamma: float or tensor broadcastable to the batch shape.

    Returns:
      ``[..., S, A]`` action values (batch axes of all inputs broadcast).
    """
    S, _, _ = _check_mdp_shapes(P, R, gamma)
    _check_v(v, S, P)
    return R + _gamma_for(gamma, 2) * _expected_next(P, v)


def v_from_q(q: torch.Tensor, pi: torch.Tensor | None = None) -> torch.Tensor:
    """State values from action values.

    Args:
      q: ``[..., S, A]`` action values (floating point).
      pi: optional ``[..., S, A]`` policy; ``None`` means greedy.

    Returns:
      ``[..., S]``: ``max_a q`` if ``pi`` is None, else ``sum_a pi * q``.
    """
    check_float(q, "q")
    if q.ndim < 2:
        raise ValueError(f"q: expected shape (..., S, A) with rank >= 2, got shape {_shape(q)}")
    if pi is None:
        return q.amax(-1)
    check_tensor(pi, "pi")
    if pi.ndim < 2 or pi.shape[-2:] != q.shape[-2:]:
        raise ValueError(
            f"pi: expected shape (..., {q.shape[-2]}, {q.shape[-1]}) (the states and actions "
            f"of q), got shape {_shape(pi)}"
        )
    if pi.dtype != q.dtype:
        raise TypeError(f"pi: expected dtype {q.dtype} (the dtype of q), got {pi.dtype}")
    return (pi * q).sum(-1)


def greedy_actions(q: torch.Tensor) -> torch.Tensor:
    """``int64 [..., S]`` greedy actions ``argmax_a q[..., s, a]``.

    Ties go to the lowest action index (``torch.argmax``'s documented rule).
    """
    check_float(q, "q")
    if q.ndim < 2:
        raise ValueError(f"q: expected shape (..., S, A) with rank >= 2, got shape {_shape(q)}")
    return q.argmax(-1)


def _one_hot(actions: torch.Tensor, num_actions: int, dtype: torch.dtype) -> torch.Tensor:
    # a comparison rather than F.one_hot, which vmap and compile handle less well
    arange = torch.arange(num_actions, device=actions.device)
    return (arange == actions.unsqueeze(-1)).to(dtype)


def greedy_policy(q: torch.Tensor, one_hot: bool = True) -> torch.Tensor:
    """The deterministic greedy policy of ``q``.

    Args:
      q: ``[..., S, A]`` action values.
      one_hot: return a one-hot ``[..., S, A]`` policy in ``q``'s dtype (default);
        if False, return the ``int64 [..., S]`` actions (as :func:`greedy_actions`).

    Ties go to the lowest action index.
    """
    a = greedy_actions(q)
    return _one_hot(a, q.shape[-1], q.dtype) if one_hot else a


# ---------------------------------------------------------------- Bellman operators
def bellman_expectation_v(v, P, R, gamma, pi) -> torch.Tensor:
    """Bellman expectation operator on state values.

    ``(T^pi v)[s] = sum_a pi[s, a] (R[s, a] + gamma * sum_s' P[s, a, s'] v[s'])``.

    Args:
      v: ``[..., S]``; P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float or tensor broadcastable to the batch; pi: ``[..., S, A]``.

    Returns:
      ``[..., S]``.
    """
    S, A, _ = _check_mdp_shapes(P, R, gamma)
    _check_v(v, S, P)
    _check_sa(pi, S, A, P, "pi")
    return (pi * (R + _gamma_for(gamma, 2) * _expected_next(P, v))).sum(-1)


def bellman_expectation_q(q, P, R, gamma, pi) -> torch.Tensor:
    """Bellman expectation operator on action values.

    ``(T^pi q)[s, a] = R[s, a] + gamma * sum_s' P[s, a, s'] sum_a' pi[s', a'] q[s', a']``.

    Args:
      q: ``[..., S, A]``; P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float or tensor broadcastable to the batch; pi: ``[..., S, A]``.

    Returns:
      ``[..., S, A]``.
    """
    S, A, _ = _check_mdp_shapes(P, R, gamma)
    _check_sa(q, S, A, P, "q")
    _check_sa(pi, S, A, P, "pi")
    return R + _gamma_for(gamma, 2) * _expected_next(P, (pi * q).sum(-1))


def bellman_optimality_v(v, P, R, gamma) -> torch.Tensor:
    """Bellman optimality operator on state values.

    ``(T* v)[s] = max_a (R[s, a] + gamma * sum_s' P[s, a, s'] v[s'])``.

    Args:
      v: ``[..., S]``; P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float or tensor broadcastable to the batch.

    Returns:
      ``[..., S]``.
    """
    return q_from_v(v, P, R, gamma).amax(-1)


def bellman_optimality_q(q, P, R, gamma) -> torch.Tensor:
    """Bellman optimality operator on action values.

    ``(T* q)[s, a] = R[s, a] + gamma * sum_s' P[s, a, s'] max_a' q[s', a']``.

    Args:
      q: ``[..., S, A]``; P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float or tensor broadcastable to the batch.

    Returns:
      ``[..., S, A]``.
    """
    S, A, _ = _check_mdp_shapes(P, R, gamma)
    _check_sa(q, S, A, P, "q")
    return R + _gamma_for(gamma, 2) * _expected_next(P, q.amax(-1))


# ----------------------------------------------------------------- policy evaluation
def _policy_model(P, R, pi):
    """Markov chain of a policy: ``P_pi [..., S, S]`` and ``r_pi [..., S]``."""
    return torch.einsum("...sa,...sat->...st", pi, P), (pi * R).sum(-1)


def _host_gamma(gamma, batch, P) -> torch.Tensor:
    """``gamma`` as a tensor of shape ``batch`` on P's device (host-loop functions)."""
    if isinstance(gamma, torch.Tensor):
        return gamma.to(device=P.device, dtype=P.dtype).expand(batch)
    return torch.full(batch, float(gamma), dtype=P.dtype, device=P.device)


def _check_gamma_below_one(gamma, what: str) -> None:
    if isinstance(gamma, torch.Tensor):
        if gamma.numel() and float(gamma.amax()) >= 1:
            raise ValueError(
                f"gamma: expected discounts < 1 for {what}, got a maximum of "
                f"{float(gamma.amax()):.6g}"
            )
    elif gamma >= 1:
        raise ValueError(f"gamma: expected a discount < 1 for {what}, got {gamma}")


def policy_evaluation(
    P: torch.Tensor,
    R: torch.Tensor,
    gamma,
    pi: torch.Tensor,
    method: str = "exact",
    tol: float = 1e-10,
    max_iterations: int = 100_000,
    validate: bool = True,
) -> torch.Tensor:
    """State values ``V^pi`` of a policy.

    ``method="exact"`` solves ``(I - gamma P_pi) v = r_pi`` with one batched
    ``torch.linalg.solve``, where ``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']`` and
    ``r_pi[s] = sum_a pi[s, a] R[s, a]``.  It is pure, vmappable and compilable,
    needs ``gamma < 1`` (checked for a float ``gamma``; a tensor ``gamma`` equal to 1
    makes the system singular, which ``torch.linalg.solve`` reports, or under
    vmap/compile yields non-finite values) and costs ``O(S^3)`` per MDP.

    ``method="iterative"`` applies ``v <- r_pi + gamma P_pi v`` from ``v = 0``
    until the sup-norm change is below ``tol`` for every MDP (a host loop: one
    synchronisation per sweep, not vmappable).  The error of the result is at
    most ``tol * gamma / (1 - gamma)``.  Works for ``gamma = 1`` when the policy
    reaches absorbing zero-reward states.  Warns if ``max_iterations`` is reached.

    Args:
      P: ``[..., S, A, S]`` transition probabilities.
      R: ``[..., S, A]`` rewards.
      gamma: float in [0, 1] or tensor broadcastable to the batch shape.
      pi: ``[..., S, A]`` policy (rows sum to 1).
      method: ``"exact"`` or ``"iterative"``.
      tol: stopping threshold of the iterative method.
      max_iterations: cap on sweeps of the iterative method.
      validate: iterative method only: check values with :func:`check_mdp` first.

    Returns:
      ``[..., S]`` values ``V^pi`` (batch axes of the inputs broadcast).
    """
    S, A, batch = _check_mdp_shapes(P, R, gamma)
    _check_sa(pi, S, A, P, "pi")
    batch = tuple(torch.broadcast_shapes(batch, pi.shape[:-2]))
    if method == "exact":
        if not isinstance(gamma, torch.Tensor) and gamma >= 1:
            raise ValueError(
                f"gamma: expected a discount < 1 for method='exact' (I - gamma P_pi is "
                f"singular at gamma = 1), got {gamma}; use method='iterative' for episodic MDPs"
            )
        P_pi, r_pi = _policy_model(P, R, pi)
        eye = torch.eye(S, dtype=P.dtype, device=P.device)
        A_mat = eye - _gamma_for(gamma, 2) * P_pi
        return torch.linalg.solve(A_mat, r_pi.unsqueeze(-1)).squeeze(-1)
    if method != "iterative":
        raise ValueError(f"method: expected 'exact' or 'iterative', got {method!r}")
    check_positive(tol, "tol")
    _check_count(max_iterations, "max_iterations")
    if validate:
        check_mdp(P, R, gamma)
    P_pi, r_pi = _policy_model(P, R, pi)
    g = _gamma_for(gamma, 1)
    P_pi = P_pi * (g.unsqueeze(-1) if isinstance(g, torch.Tensor) else g)
    v = torch.zeros(batch + (S,), dtype=P.dtype, device=P.device)
    for _ in range(max_iterations):
        v_new = r_pi + (P_pi @ v.unsqueeze(-1)).squeeze(-1)
        converged = bool(((v_new - v).abs() < tol).all())
        v = v_new
        if converged:
            return v
    warnings.warn(
        f"policy_evaluation: the sup-norm change did not fall below tol={tol:g} within "
        f"max_iterations={max_iterations}",
        RuntimeWarning,
        stacklevel=2,
    )
    return v


# ------------------------------------------------------------------ value iteration
def value_iteration_fixed(P, R, gamma, num_iterations: int, v0: torch.Tensor | None = None) -> ValueIterationResult:
    """Value iteration for exactly ``num_iterations`` sweeps, branch-free.

    ``q_k = R + gamma P v_{k-1}``, ``v_k = max_a q_k``, from ``v_0 = v0`` (zeros by
    default).  No data-dependent control flow, so it runs under ``torch.func.vmap``
    and ``torch.compile``.  The sweeps are a Python loop that compile unrolls:
    keep ``num_iterations`` small inside ``funrl.jit`` (compile time grows with
    it), or compile one sweep (:func:`bellman_optimality_q`) and loop in Python.
    After ``k`` sweeps ``||v_k - v*||_inf <= gamma^k ||v0 - v*||_inf``.

    Args:
      P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float or tensor broadcastable to the batch shape.
      num_iterations: number of sweeps (Python int >= 1).
      v0: optional ``[..., S]`` initial values.

    Returns:
      :class:`ValueIterationResult` ``(v, q, policy, iterations)`` with
      ``v = q.amax(-1)``, ``policy = greedy_policy(q)`` and ``iterations`` an
      ``int64`` tensor of the batch shape filled with ``num_iterations``.
    """
    S, A, batch = _check_mdp_shapes(P, R, gamma)
    _check_count(num_iterations, "num_iterations")
    if v0 is None:
        v = torch.zeros(S, dtype=P.dtype, device=P.device)
    else:
        _check_v(v0, S, P, "v0")
        v = v0
    g = _gamma_for(gamma, 2)
    for _ in range(num_iterations):
        q = R + g * _expected_next(P, v)
        v = q.amax(-1)
    iterations = torch.full(q.shape[:-2], num_iterations, dtype=torch.int64, device=P.device)
    return ValueIterationResult(v, q, greedy_policy(q), iterations)


def _default_block_size(S: int, A: int, dtype: torch.dtype) -> int:
    # Blocks of about 4 MiB of transitions stay in this class of CPU's caches across
    # sweeps (measured on a 2-core EPYC, 64 states x 4 actions: 4 MiB blocks ran
    # 1.7x faster per sweep than the whole batch streamed from memory, and fewer,
    # larger blocks than L2-sized ones pay less per-op overhead).
    per_mdp = S * A * S * torch.finfo(dtype).bits // 8
    return max(1, (4 << 20) // max(per_mdp, 1))


def value_iteration(
    P: torch.Tensor,
    R: torch.Tensor,
    gamma,
    tol: float = 1e-8,
    max_iterations: int = 10_000,
    *,
    stopping: str = "span",
    check_every: int | None = None,
    block_size: int | None = None,
    validate: bool = True,
) -> ValueIterationResult:
    """Solve MDPs by value iteration, stopping when every MDP in the batch has converged.

    Sweeps ``q_k = R + gamma P v_{k-1}``, ``v_k = max_a q_k`` from ``v_0 = 0``
    (synchronous/Jacobi updates, so all MDPs of a block advance together).  The
    batch is processed in blocks of ``block_size`` MDPs, each iterated to
    convergence while its transition tensor stays in cache.  Convergence is
    checked every ``check_every`` sweeps (one host synchronisation per check).

    Stopping rules (``d = v_k - v_{k-1}``, ``c = gamma / (1 - gamma)``):

    * ``"span"`` (default): stop when ``c * (max_s d - min_s d) / 2 < tol``.  By
      MacQueen's bounds (Puterman 1994, thm. 6.6.6),
      ``v_k + c min d <= v* <= v_k + c max d``, so the midpoint
      ``v_k + c (max d + min d) / 2`` is within ``tol`` of ``v*``; one more sweep
      from it is returned (error ``<= gamma * tol``).  The span of ``d`` shrinks
      with the mixing of the chain as well as with ``gamma``, so MDPs whose
      transitions mix need far fewer sweeps than the sup rule (8 instead of
      ~1350 for random dense MDPs at ``gamma = 0.99``).  MDPs with ``gamma = 1``
      use the sup rule.  In float32, tolerances below the dtype's resolution
      (about ``4 eps max|v| c``) are raised to it, with a warning.
    * ``"sup"``: the textbook rule, stop when ``max_s |d| < tol``; the error of
      ``v_k`` is then at most ``tol * c``.  Works with ``gamma = 1`` on episodic
      MDPs whose optimal policies terminate.

    Not vmappable (it loops until converged); pass a batch of MDPs instead, or
    use :func:`value_iteration_fixed`.  Warns if ``max_iterations`` sweeps do not
    suffice.

    Args:
      P: ``[..., S, A, S]`` row-stochastic transition probabilities.
      R: ``[..., S, A]`` rewards.
      gamma: float in [0, 1] or tensor broadcastable to the batch shape.
      tol: stopping threshold (see above).
      max_iterations: cap on sweeps per block.
      stopping: ``"span"`` or ``"sup"``.
      check_every: sweeps between convergence checks; default 2 for ``"span"``
        (few sweeps, so overshooting costs more than checking) and 16 for ``"sup"``.
      block_size: MDPs per block; default keeps a block's transitions near 4 MiB.
      validate: check values with :func:`check_mdp` first (one pass over ``P``).

    Returns:
      :class:`ValueIterationResult` ``(v, q, policy, iterations)``; ``v`` and
      ``q`` have the batch shape of the inputs broadcast; ``v == q.amax(-1)``.
    """
    S, A, batch = _check_mdp_shapes(P, R, gamma)
    check_positive(tol, "tol")
    _check_count(max_iterations, "max_iterations")
    if check_every is None:
        check_every = 2 if stopping == "span" else 16
    _check_count(check_every, "check_every")
    if block_size is not None:
        _check_count(block_size, "block_size")
    if stopping not in ("span", "sup"):
        raise ValueError(f"stopping: expected 'span' or 'sup', got {stopping!r}")
    if validate:
        check_mdp(P, R, gamma)

    n = math.prod(batch)
    dtype, device = P.dtype, P.device
    if n == 0:
        q = torch.zeros(batch + (S, A), dtype=dtype, device=device)
        return ValueIterationResult(q.amax(-1), q, greedy_policy(q),
                                    torch.zeros(batch, dtype=torch.int64, device=device))
    Pf = P.expand(batch + (S, A, S)).reshape(n, S, A, S)
    Rf = R.expand(batch + (S, A)).reshape(n, 1, S * A)
    gf = _host_gamma(gamma, batch, P).reshape(n)
    block = block_size or _default_block_size(S, A, dtype)
    eps = torch.finfo(dtype).eps

    vs, qs, its = [], [], []
    unconverged, floored = 0, 0.0
    for lo_i in range(0, n, block):
        hi_i = min(n, lo_i + block)
        b = hi_i - lo_i
        g = gf[lo_i:hi_i]
        # (b, S', S*A) with gamma folded in: one baddbmm per sweep computes
        # R + gamma P v as the row vector v^T (gamma P)^T, the fastest layout measured
        # on CPU (a batched matrix-vector product P @ v ran 2-8x slower).
        PT = Pf[lo_i:hi_i].reshape(b, S * A, S).transpose(1, 2).clone(memory_format=torch.contiguous_format)
        PT.mul_(g.view(b, 1, 1))  # clone always copies, so this never writes into P
        Rb = Rf[lo_i:hi_i]
        c = torch.where(g < 1, g / (1 - g).clamp_min(eps), torch.zeros_like(g))
        v = torch.zeros(b, 1, S, dtype=dtype, device=device)
        k = 0
        done = False
        while not done and k < max_iterations:
            for _ in range(min(check_every, max_iterations - k)):
                v_prev = v
                q = torch.baddbmm(Rb, v, PT)
                v = q.view(b, S, A).amax(-1).view(b, 1, S)
                k += 1
            d = (v - v_prev).view(b, S)
            sup = d.abs().amax(-1)
            if stopping == "sup":
                done = bool((sup < tol).all())
                continue
            d_lo, d_hi = torch.aminmax(d, dim=-1)
            err = torch.where(g < 1, c * (d_hi - d_lo) / 2, sup)
            # Below this the span of d is rounding noise (a few ulps of |v|).
            floor = 4 * eps * v.abs().amax((-2, -1)) * torch.where(g < 1, c, torch.ones_like(c))
            tol_eff = floor.clamp_min(tol)
            done = bool((err < tol_eff).all())
        if stopping == "span":
            raised = (err >= tol) & (err < tol_eff)
            if bool(raised.any()):
                floored = max(floored, float(tol_eff[raised].amax()))
            v_mid = v + (c * (d_hi + d_lo) / 2).view(b, 1, 1)
            q = torch.baddbmm(Rb, v_mid, PT)
            v = q.view(b, S, A).amax(-1).view(b, 1, S)
            k += 1
        if not done:
            unconverged += b
        vs.append(v.view(b, S))
        qs.append(q.view(b, S, A))
        its.append(torch.full((b,), k, dtype=torch.int64, device=device))

    if floored:
        warnings.warn(
            f"value_iteration: tol={tol:g} is below what {dtype} resolves for these values "
            f"and discounts; stopped at an error bound of up to {floored:.3g} instead "
            f"(use float64 for tighter tolerances)",
            UserWarning,
            stacklevel=2,
        )
    if unconverged:
        warnings.warn(
            f"value_iteration: {unconverged} of {n} MDPs did not reach tol={tol:g} within "
            f"max_iterations={max_iterations} sweeps",
            RuntimeWarning,
            stacklevel=2,
        )
    v = torch.cat(vs).reshape(batch + (S,))
    q = torch.cat(qs).reshape(batch + (S, A))
    iterations = torch.cat(its).reshape(batch)
    return ValueIterationResult(v, q, greedy_policy(q), iterations)


# ----------------------------------------------------------------- policy iteration
def policy_iteration(
    P: torch.Tensor,
    R: torch.Tensor,
    gamma,
    max_iterations: int = 1_000,
    *,
    validate: bool = True,
) -> ValueIterationResult:
    """Solve MDPs by policy iteration: exact evaluation, then greedy improvement.

    Starts from the policy greedy in ``R``; each iteration solves
    ``(I - gamma P_pi) v = r_pi`` for all MDPs at once (see
    :func:`policy_evaluation`) and switches a state's action only where another
    action is better by more than a few ulps of ``|q|``, which keeps rounding
    noise between tied actions from cycling.  Stops when no MDP's policy changes
    (for finite MDPs this happens after finitely many iterations, typically a
    handful).  A host loop, not vmappable.  Needs ``gamma < 1``.

    Args:
      P: ``[..., S, A, S]``; R: ``[..., S, A]``;
      gamma: float in [0, 1) or tensor broadcastable to the batch shape.
      max_iterations: cap on policy evaluations (warns if reached).
      validate: check values with :func:`check_mdp` first.

    Returns:
      :class:`ValueIterationResult` ``(v, q, policy, iterations)``: ``v = V^pi``
      of the final policy, ``q = R + gamma P v``, ``policy`` one-hot, and
      ``iterations`` the number of policy evaluations until each MDP's policy was stable.
    """
    S, A, batch = _check_mdp_shapes(P, R, gamma)
    _check_count(max_iterations, "max_iterations")
    _check_gamma_below_one(gamma, "policy_iteration")
    if validate:
        check_mdp(P, R, gamma)
    dtype, device = P.dtype, P.device
    eps = torch.finfo(dtype).eps
    Pb = P.expand(batch + (S, A, S))
    Rb = R.expand(batch + (S, A))
    g = _host_gamma(gamma, batch, P)
    actions = Rb.argmax(-1)
    iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    stable = torch.zeros(batch, dtype=torch.bool, device=device)
    eye = torch.eye(S, dtype=dtype, device=device)
    for _ in range(max_iterations):
        # Indexing the chosen actions is cheaper than contracting P with a one-hot policy.
        P_pi = Pb.gather(-2, actions[..., None, None].expand(batch + (S, 1, S))).squeeze(-2)
        r_pi = Rb.gather(-1, actions.unsqueeze(-1))
        v = torch.linalg.solve(eye - g[..., None, None] * P_pi, r_pi).squeeze(-1)
        q = Rb + g[..., None, None] * _expected_next(Pb, v)
        q_best, best = q.max(-1)
        q_now = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        threshold = 4 * eps * q.abs().amax((-2, -1), keepdim=True).squeeze(-1).clamp_min(1)
        improve = q_best > q_now + threshold
        iterations = iterations + (~stable).to(torch.int64)
        evaluated = actions
        actions = torch.where(improve, best, actions)
        stable = ~improve.any(-1)
        if bool(stable.all()):
            break
    else:
        warnings.warn(
            f"policy_iteration: {int((~stable).sum())} MDPs still changed policy after "
            f"max_iterations={max_iterations}",
            RuntimeWarning,
            stacklevel=2,
        )
    return ValueIterationResult(v, q, _one_hot(evaluated, A, dtype), iterations)
