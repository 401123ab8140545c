"""Finite (tabular) MDPs as pure environments, and gymnasium's toy-text worlds.

:class:`FiniteMDP` turns transition tables into an :class:`~funrl.envs.core.Environment`:

* ``P[s, a, s']`` -- transition probabilities (each ``P[s, a]`` row sums to 1),
* ``R[s, a, s']`` -- reward of the transition (an ``R[s, a]`` table is
  broadcast over ``s'``),
* ``terminated[s, a, s']`` -- whether the transition ends the episode
  (default: ``s'`` is one of ``terminal_states``),
* ``initial_distribution[s]`` (default: uniform over non-terminal states).

The tables are *params* fields (:class:`MDPParams`), so one ``FiniteMDP``
object steps a whole batch of different MDPs of the same size under
``torch.func.vmap`` (stack their ``default_params`` with
:func:`funrl.tree.stack` and pass ``batched_params=True``).  They are also
attributes of the env in float64 (``mdp.P``, ``mdp.R``, ``mdp.terminated``,
``mdp.expected_reward``) for exact dynamic programming.

:class:`FrozenLake`, :class:`CliffWalking` and :class:`Taxi` rebuild
gymnasium 1.4's ``env.unwrapped.P`` tables (written here from gymnasium's
rules, gymnasium is not imported) so their transitions, rewards, termination
flags and initial distributions equal gymnasium's exactly; the tests compare
them entry by entry.

Next states are drawn by inverting the CDF of ``P[s, a]`` with one float64
uniform -- the method of gymnasium's ``categorical_sample`` -- rather than
Gumbel-max over ``log P``: one random number per step instead of ``S``
(Taxi: 1 instead of 500), and zero-probability states can never be drawn.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from funrl import random as jr
from funrl import tree
from funrl._checks import check_tensor
from funrl.envs import spaces
from funrl.envs.core import Environment

__all__ = [
    "MDPParams",
    "MDPState",
    "FiniteMDP",
    "random_mdp",
    "FrozenLake",
    "CliffWalking",
    "Taxi",
    "FROZEN_LAKE_MAPS",
]

# time >= max_episode_steps never holds: "no time limit" as a tensor param
_NO_LIMIT = torch.iinfo(torch.int64).max


@tree.pytree_dataclass
class MDPParams:
    """Params of a :class:`FiniteMDP` (all tensors; batch them to vmap over MDPs).

    Attributes:
      P: float ``(S, A, S)``, ``P[s, a, s']`` transition probabilities.
      R: float ``(S, A, S)``, reward of the transition ``s -a-> s'``.
      terminated: bool ``(S, A, S)``, the transition ends the episode.
      initial_distribution: float ``(S,)``, distribution of the first state.
      max_episode_steps: int64 ``()``, time limit (int64 max: none).
    """

    P: torch.Tensor
    R: torch.Tensor
    terminated: torch.Tensor
    initial_distribution: torch.Tensor
    max_episode_steps: torch.Tensor


@tree.pytree_dataclass
class MDPState:
    """State of a :class:`FiniteMDP`: the state index ``s`` and the step count ``time`` (int64 ``()``)."""

    s: torch.Tensor
    time: torch.Tensor


def _sample_index(key: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Draw ``i`` with probability ``p[i] / sum(p)`` (int64 ``()``), by inverse CDF.

    Computed in float64 whatever the params dtype, so that probabilities far
    below float32's 2**-24 resolution are still drawn at their rate.  The
    uniform is scaled by the row total so that a row summing to 1 - 1e-7 in
    float32 never runs past its end; the clamp to the last positive entry
    guards the one rounding case ``u * total == total``.
    """
    p = p.to(torch.float64)
    cdf = torch.cumsum(p, dim=-1)
    u = jr.uniform(key, (), torch.float64) * cdf[-1]
    idx = (cdf <= u).sum(dim=-1)
    positions = torch.arange(p.shape[-1], device=p.device)
    last = torch.where(p > 0, positions, torch.zeros_like(positions)).amax(dim=-1)
    return torch.minimum(idx, last)


def _as_float64(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name}: expected a tensor or nested sequence of numbers, got {type(x).__name__}") from e
    if not x.is_floating_point():
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name}: expected a real floating-point tensor, got dtype {x.dtype}")
        x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf entries")
    return x


def _sum_tolerance(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 1e-2)


class FiniteMDP(Environment):
    """An environment defined by finite transition tables.

    Args:
      P: float ``(S, A, S)`` (tensor or nested sequence): ``P[s, a, s']``.
        Every row ``P[s, a]`` must be non-negative and sum to 1 (within 1e-9
        in float64, 1e-5 in float32).
      R: float ``(S, A)`` (expected reward of taking ``a`` in ``s``) or
        ``(S, A, S)`` (reward of the transition ``s -a-> s'``; keeps the exact
        reward of every sampled transition).
      initial_distribution: float ``(S,)``, non-negative, summing to 1.
        Default: uniform over the non-terminal states.
      terminal_states: states whose *entry* ends the episode: a bool ``(S,)``
        tensor or a sequence/tensor of state indices.  Default: none.
      max_episode_steps: a positive int, or None for no time limit.
      terminated: optional bool ``(S, A, S)`` table of per-transition
        termination flags, replacing the default ``terminal_states[s']``
        (gymnasium's tables flag termination per transition).

    Observations are the int64 state index (shape ``()``), actions int64
    ``()`` in ``[0, A)``.  An episode starts from ``initial_distribution``;
    a step draws ``s' ~ P[s, a]`` and returns ``R[s, a, s']`` and
    ``terminated[s, a, s']``.  Params (:class:`MDPParams`) hold the tables
    in the requested dtype; the attributes below hold them in float64.

    Attributes:
      P, R, terminated: the ``(S, A, S)`` tables (float64, float64, bool).
      initial_distribution: float64 ``(S,)``.
      terminal_states: bool ``(S,)``.
      expected_reward: float64 ``(S, A)``, ``sum_s' P[s, a, s'] R[s, a, s']``.
      num_states, num_actions: ``S`` and ``A``.
      max_episode_steps: the int limit, or None.

    Raises:
      TypeError/ValueError: (eagerly, at construction) wrong ranks, shapes or
        dtypes, negative probabilities, rows that do not sum to 1, non-finite
        entries, out-of-range terminal states.
    """

    def __init__(
        self,
        P,
        R,
        initial_distribution=None,
        terminal_states=None,
        max_episode_steps: int | None = None,
        terminated=None,
    ):
        in_dtype = P.dtype if isinstance(P, torch.Tensor) and P.is_floating_point() else torch.float64
        P = _as_float64(P, "P")
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P: expected shape (S, A, S) (num_states, num_actions, num_states), got {tuple(P.shape)}")
        S, A = int(P.shape[0]), int(P.shape[1])
        if S < 1 or A < 1:
            raise ValueError(f"P: expected at least one state and one action, got shape {tuple(P.shape)}")
        P = P.to(torch.float64)
        if bool((P < 0).any()):
            s, a, t = (int(i) for i in torch.nonzero(P < 0)[0])
            raise ValueError(f"P: expected non-negative probabilities, got P[{s}, {a}, {t}] = {float(P[s, a, t])}")
        row_sums = P.sum(-1)
        tol = _sum_tolerance(in_dtype)
        bad = (row_sums - 1).abs() > tol
        if bool(bad.any()):
            s, a = (int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(
                f"P: expected every row P[s, a, :] to sum to 1 (row-stochastic, tolerance {tol}), "
                f"got sum(P[{s}, {a}, :]) = {float(row_sums[s, a])!r} ({int(bad.sum())} bad rows)"
            )

        R = _as_float64(R, "R").to(device=P.device, dtype=torch.float64)
        if tuple(R.shape) == (S, A):
            R = R[:, :, None].expand(S, A, S).clone()
        elif tuple(R.shape) != (S, A, S):
            raise ValueError(f"R: expected shape (S, A) = {(S, A)} or (S, A, S) = {(S, A, S)}, got {tuple(R.shape)}")

        terminal = self._terminal_mask(terminal_states, S, P.device)

        if terminated is None:
            term_table = terminal[None, None, :].expand(S, A, S).clone()
        else:
            check_tensor(terminated, "terminated")
            if terminated.dtype != torch.bool:
                raise TypeError(f"terminated: expected a bool tensor, got dtype {terminated.dtype}")
            if tuple(terminated.shape) != (S, A, S):
                raise ValueError(f"terminated: expected shape (S, A, S) = {(S, A, S)}, got {tuple(terminated.shape)}")
            term_table = terminated.to(P.device)

        if initial_distribution is None:
            live = (~terminal).to(torch.float64)
            if float(live.sum()) == 0:
                raise ValueError(
                    "initial_distribution: every state is terminal, so the default (uniform over "
                    "non-terminal states) is empty; pass initial_distribution explicitly"
                )
            init = live / live.sum()
        else:
            init_dtype = (
                initial_distribution.dtype
                if isinstance(initial_distribution, torch.Tensor) and initial_distribution.is_floating_point()
                else torch.float64
            )
            init = _as_float64(initial_distribution, "initial_distribution").to(device=P.device, dtype=torch.float64)
            if tuple(init.shape) != (S,):
                raise ValueError(f"initial_distribution: expected shape (S,) = ({S},), got {tuple(init.shape)}")
            if bool((init < 0).any()):
                raise ValueError("initial_distribution: expected non-negative probabilities, got a negative entry")
            total = float(init.sum())
            if abs(total - 1) > _sum_tolerance(init_dtype):
                raise ValueError(f"initial_distribution: expected entries summing to 1, got sum {total!r}")

        if max_episode_steps is not None:
            if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
                raise ValueError(f"max_episode_steps: expected a positive int or None, got {max_episode_steps!r}")

        self.P = P
        self.R = R
        self.terminated = term_table
        self.terminal_states = terminal
        self.initial_distribution = init
        self.max_episode_steps = max_episode_steps
        self.num_states = S
        self._num_actions = A

    @staticmethod
    def _terminal_mask(terminal_states, S: int, device) -> torch.Tensor:
        if terminal_states is None:
            return torch.zeros(S, dtype=torch.bool, device=device)
        if isinstance(terminal_states, torch.Tensor) and terminal_states.dtype == torch.bool:
            if tuple(terminal_states.shape) != (S,):
                raise ValueError(
                    f"terminal_states: expected a bool mask of shape (S,) = ({S},) or a list of indices, "
                    f"got a bool tensor of shape {tuple(terminal_states.shape)}"
                )
            return terminal_states.to(device)
        idx = torch.as_tensor(terminal_states, device=device)
        if idx.is_floating_point() or idx.dtype == torch.bool or idx.ndim > 1:
            raise TypeError(
                f"terminal_states: expected a bool mask of shape ({S},) or a 1-D sequence of int indices, "
                f"got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        idx = idx.reshape(-1).to(torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= S):
            raise ValueError(f"terminal_states: expected indices in [0, {S - 1}], got {idx.tolist()}")
        return torch.zeros(S, dtype=torch.bool, device=device).index_fill(0, idx, True)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_transitions(
        cls,
        transitions,
        initial_distribution,
        terminal_states=None,
        max_episode_steps: int | None = None,
    ) -> "FiniteMDP":
        """Build from gymnasium's toy-text table format (``env.unwrapped.P``).

        Args:
          transitions: ``transitions[s][a]`` is a list of ``(probability,
            next_state, reward, terminated)`` outcomes (a dict or list indexed
            by ``s`` then ``a``), e.g. ``gymnasium.make("Taxi-v3").unwrapped.P``.
          initial_distribution: float ``(S,)`` (e.g. ``initial_state_distrib``).
          terminal_states, max_episode_steps: as in :class:`FiniteMDP`.

        Outcomes leading to the same ``next_state`` are merged: probabilities
        add up (in list order); the reward is kept when they agree and is
        their probability-weighted mean otherwise (so ``R[s, a]`` stays
        exact, but a sampled reward is then that mean).

        Raises:
          ValueError: outcomes to one ``next_state`` that disagree on
            ``terminated`` (no ``(S, A, S)`` table can hold them).
        """
        P, R, D = _dense_tables(transitions)
        return cls(P, R, initial_distribution, terminal_states, max_episode_steps, terminated=D)

    # ------------------------------------------------------------ metadata
    @property
    def num_actions(self) -> int:
        """Number of actions ``A``."""
        return self._num_actions

    @property
    def expected_reward(self) -> torch.Tensor:
        """float64 ``(S, A)``: ``R[s, a] = sum_s' P[s, a, s'] R[s, a, s']``."""
        return (self.P * self.R).sum(-1)

    def absorbing_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, R)`` for dynamic programming, with terminal states absorbing and rewardless.

        Returns:
          float64 ``P`` ``(S, A, S)`` whose terminal-state rows are self-loops
          and ``R`` ``(S, A)`` (expected reward) zero on terminal states: the
          convention of :mod:`funrl.dp`.  The values of non-terminal states are
          then exactly the episodic values of this env (gymnasium keeps
          ordinary moves in the rows of e.g. CliffWalking's goal; they are
          never used in an episode).

        Raises:
          ValueError: when termination is not "entering a terminal state"
            (``terminated[s, a, s'] != terminal_states[s']`` for some
            non-terminal ``s`` and possible ``s'``), which no state-based
            absorbing convention can express.
        """
        live = ~self.terminal_states
        possible = self.P > 0
        expect = self.terminal_states[None, None, :].expand_as(self.terminated)
        if bool((possible & (self.terminated != expect))[live].any()):
            raise ValueError(
                "absorbing_tables: termination here is not 'entering a terminal state' (terminated[s, a, s'] "
                "differs from terminal_states[s'] for a non-terminal s); use P, R and terminated directly"
            )
        eye = torch.eye(self.num_states, dtype=self.P.dtype, device=self.P.device)
        P = torch.where(self.terminal_states[:, None, None], eye[:, None, :].expand_as(self.P), self.P)
        R = torch.where(self.terminal_states[:, None], torch.zeros_like(self.expected_reward), self.expected_reward)
        return P, R

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_states={self.num_states}, num_actions={self.num_actions})"

    # ------------------------------------------------------------ Environment API
    def default_params(self, dtype: torch.dtype = torch.float32) -> MDPParams:
        """The tables as :class:`MDPParams` (floats in ``dtype``, on the tables' device)."""
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"dtype: expected a torch floating dtype, got {dtype!r}")
        limit = _NO_LIMIT if self.max_episode_steps is None else self.max_episode_steps
        return MDPParams(
            P=self.P.to(dtype),
            R=self.R.to(dtype),
            terminated=self.terminated.clone(),
            initial_distribution=self.initial_distribution.to(dtype),
            max_episode_steps=torch.tensor(limit, dtype=torch.int64, device=self.P.device),
        )

    def reset_env(self, key: torch.Tensor, params: MDPParams) -> tuple[torch.Tensor, MDPState]:
        """``(obs, state)``: ``s0 ~ initial_distribution``; obs is ``s0`` (int64 ``()``)."""
        s0 = _sample_index(key, params.initial_distribution)
        # zeros_like(s0), not a fresh zeros(()): under vmap the counter is then a real
        # batched tensor, not a stride-0 broadcast that makes a compiled step recompile
        return s0, MDPState(s=s0, time=torch.zeros_like(s0))

    def step_env(self, key: torch.Tensor, state: MDPState, action: torch.Tensor, params: MDPParams):
        """``s' ~ P[s, a]``; returns ``(s', state, R[s, a, s'], terminated[s, a, s'], {})``."""
        s, a = state.s, action
        s_next = _sample_index(key, params.P[s, a])
        reward = params.R[s, a, s_next]
        done = params.terminated[s, a, s_next]
        return s_next, MDPState(s=s_next, time=state.time + 1), reward, done, {}

    def observation_space(self, params: MDPParams | None = None) -> spaces.Discrete:
        """``Discrete(S)``."""
        n = self.num_states if params is None else int(params.P.shape[0])
        return spaces.Discrete(n)

    def action_space(self, params: MDPParams | None = None) -> spaces.Discrete:
        """``Discrete(A)``."""
        n = self.num_actions if params is None else int(params.P.shape[1])
        return spaces.Discrete(n)


def _dense_tables(transitions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gymnasium-style ``transitions[s][a] = [(p, s', r, done), ...]`` -> dense P, R, terminated."""
    S = len(transitions)
    if S == 0:
        raise ValueError("transitions: expected at least one state, got an empty table")
    A = len(transitions[0])
    idx_s, idx_a, idx_t, probs, rewards_, dones_ = [], [], [], [], [], []
    for s in range(S):
        row = transitions[s]
        if len(row) != A:
            raise ValueError(f"transitions: expected {A} actions for every state, got {len(row)} for state {s}")
        for a in range(A):
            merged: dict[int, list] = {}
            for outcome in row[a]:
                p, t, r, d = outcome
                t = int(t)
                if not 0 <= t < S:
                    raise ValueError(f"transitions: next state {t} out of range [0, {S - 1}] in transitions[{s}][{a}]")
                merged.setdefault(t, []).append((float(p), float(r), bool(d)))
            for t, outs in merged.items():
                prob = 0.0
                for p, _, _ in outs:  # in list order, as summing gymnasium's outcomes does
                    prob += p
                if len({d for _, _, d in outs}) > 1:
                    raise ValueError(
                        f"transitions: outcomes of transitions[{s}][{a}] reaching state {t} disagree on "
                        "'terminated'; a (S, A, S) table cannot represent them"
                    )
                if len({r for _, r, _ in outs}) == 1:
                    reward = outs[0][1]
                else:
                    reward = math.fsum(p * r for p, r, _ in outs) / prob if prob > 0 else 0.0
                idx_s.append(s)
                idx_a.append(a)
                idx_t.append(t)
                probs.append(prob)
                rewards_.append(reward)
                dones_.append(outs[0][2])
    index = (torch.tensor(idx_s), torch.tensor(idx_a), torch.tensor(idx_t))
    P = torch.zeros((S, A, S), dtype=torch.float64).index_put(index, torch.tensor(probs, dtype=torch.float64))
    R = torch.zeros((S, A, S), dtype=torch.float64).index_put(index, torch.tensor(rewards_, dtype=torch.float64))
    D = torch.zeros((S, A, S), dtype=torch.bool).index_put(index, torch.tensor(dones_, dtype=torch.bool))
    return P, R, D


# ---------------------------------------------------------------- random MDPs
def random_mdp(
    key: torch.Tensor,
    num_states: int,
    num_actions: int,
    reward_scale: float = 1.0,
    branching: int | None = None,
    num_terminal: int = 0,
    max_episode_steps: int | None = None,
) -> FiniteMDP:
    """A random finite MDP, a pure function of ``key``.

    Args:
      key: a funrl key ``(2,)``; the tables live on its device.
      num_states, num_actions: ``S >= 1``, ``A >= 1``.
      reward_scale: ``R[s, a] ~ Normal(0, reward_scale**2)``, i.i.d. (>= 0).
      branching: number of possible successors of each ``(s, a)``
        (``1 <= branching <= S``), chosen uniformly without replacement;
        default ``S`` (dense).  Probabilities over the successors are
        Dirichlet(1, ..., 1) (uniform on the simplex).
      num_terminal: the last ``num_terminal`` states are terminal (``< S``).
      max_episode_steps: time limit (None: none).

    Returns:
      A :class:`FiniteMDP` with row-stochastic ``P``.
    """
    k = jr._check_key(key)
    for name, v in (("num_states", num_states), ("num_actions", num_actions)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    S, A = num_states, num_actions
    if branching is None:
        branching = S
    if isinstance(branching, bool) or not isinstance(branching, int) or not 1 <= branching <= S:
        raise ValueError(f"branching: expected an int in [1, num_states={S}], got {branching!r}")
    if isinstance(num_terminal, bool) or not isinstance(num_terminal, int) or not 0 <= num_terminal < S:
        raise ValueError(f"num_terminal: expected an int in [0, num_states - 1 = {S - 1}], got {num_terminal!r}")
    if isinstance(reward_scale, bool) or not isinstance(reward_scale, (int, float)) or reward_scale < 0:
        raise ValueError(f"reward_scale: expected a number >= 0, got {reward_scale!r}")
    k_w, k_support, k_r = jr.split(k, 3)
    # Dirichlet(1) = normalised i.i.d. Exp(1) weights
    weights = jr.exponential(k_w, (S, A, S), torch.float64)
    if branching < S:
        scores = jr.uniform(k_support, (S, A, S), torch.float64)
        support = torch.topk(scores, branching, dim=-1).indices
        mask = torch.zeros((S, A, S), dtype=torch.bool, device=k.device).scatter(-1, support, True)
        weights = torch.where(mask, weights, torch.zeros_like(weights))
    P = weights / weights.sum(-1, keepdim=True)
    R = reward_scale * jr.normal(k_r, (S, A), torch.float64)
    terminal = torch.arange(S, device=k.device) >= S - num_terminal
    return FiniteMDP(P, R, terminal_states=terminal, max_episode_steps=max_episode_steps)


# ---------------------------------------------------------------- FrozenLake
#: gymnasium's predefined FrozenLake maps.
FROZEN_LAKE_MAPS = {
    "4x4": ["SFFF", "FHFH", "FFFH", "HFFG"],
    "8x8": [
        "SFFFFFFF",
        "FFFFFFFF",
        "FFFHFFFF",
        "FFFFFHFF",
        "FFFHFFFF",
        "FHHFFFHF",
        "FHFFHFHF",
        "FFFHFFFG",
    ],
}

_LEFT, _DOWN, _RIGHT, _UP = 0, 1, 2, 3


class FrozenLake(FiniteMDP):
    """gymnasium's FrozenLake-v1 as a :class:`FiniteMDP` (tables equal ``env.unwrapped.P``).

    Cross a frozen lake from S to G without falling into a hole H.  Actions:
    0 left, 1 down, 2 right, 3 up; obs ``row * ncol + col``.  Reward
    ``reward_schedule`` = (goal, hole, frozen) on entering a tile; entering G
    or H terminates.  Slippery: the intended move happens with probability
    ``success_rate``, each perpendicular one with ``(1 - success_rate) / 2``.
    As in gymnasium, holes and the goal are absorbing (reward 0, flagged
    terminated), which never matters in an episode.

    Args:
      map_name: ``"4x4"`` or ``"8x8"`` (ignored when ``desc`` is given).
      is_slippery: stochastic moves (default True).
      desc: a custom map, a list of equal-length strings over ``"SFHG"``.
      success_rate: probability of the intended move when slippery.
      reward_schedule: rewards for entering (G, H, F/S) tiles.

    Time limit (``max_episode_steps``): 100, or 200 for the 8x8 map, as
    gymnasium's registry.  gymnasium's random maps (``map_name=None``) need
    its numpy RNG and are not provided: pass ``desc``.
    """

    def __init__(
        self,
        map_name: str = "4x4",
        is_slippery: bool = True,
        desc: Sequence[str] | None = None,
        success_rate: float = 1.0 / 3.0,
        reward_schedule: tuple[float, float, float] = (1, 0, 0),
    ):
        if desc is None:
            if map_name not in FROZEN_LAKE_MAPS:
                raise ValueError(
                    f"map_name: expected one of {sorted(FROZEN_LAKE_MAPS)} (or pass desc=[...]), got {map_name!r}"
                )
            desc = FROZEN_LAKE_MAPS[map_name]
            limit = 200 if map_name == "8x8" else 100
        else:
            limit = 100
        desc = [str(row) for row in desc]
        if not desc or any(len(row) != len(desc[0]) for row in desc) or any(set(r) - set("SFHG") for r in desc):
            raise ValueError(f"desc: expected equal-length strings over 'SFHG', got {desc!r}")
        if not sum(row.count("S") for row in desc):
            raise ValueError(f"desc: expected at least one start tile 'S', got {desc!r}")
        if not 0 <= success_rate <= 1:
            raise ValueError(f"success_rate: expected a probability in [0, 1], got {success_rate!r}")
        nrow, ncol = len(desc), len(desc[0])
        fail_rate = (1.0 - success_rate) / 2.0
        goal_r, hole_r, frozen_r = reward_schedule

        def move(row, col, a):
            if a == _LEFT:
                col = max(col - 1, 0)
            elif a == _DOWN:
                row = min(row + 1, nrow - 1)
            elif a == _RIGHT:
                col = min(col + 1, ncol - 1)
            elif a == _UP:
                row = max(row - 1, 0)
            return row, col

        def outcome(row, col, a):
            r2, c2 = move(row, col, a)
            letter = desc[r2][c2]
            reward = goal_r if letter == "G" else (hole_r if letter == "H" else frozen_r)
            return r2 * ncol + c2, reward, letter in "GH"

        transitions = []
        for row in range(nrow):
            for col in range(ncol):
                s = row * ncol + col
                per_action = []
                for a in range(4):
                    if desc[row][col] in "GH":
                        per_action.append([(1.0, s, 0, True)])
                    elif is_slippery:
                        per_action.append(
                            [
                                (success_rate if b == a else fail_rate, *outcome(row, col, b))
                                for b in ((a - 1) % 4, a, (a + 1) % 4)
                            ]
                        )
                    else:
                        per_action.append([(1.0, *outcome(row, col, a))])
                transitions.append(per_action)
        flat = "".join(desc)
        starts = torch.tensor([c == "S" for c in flat], dtype=torch.float64)
        terminal = torch.tensor([c in "GH" for c in flat], dtype=torch.bool)
        P, R, D = _dense_tables(transitions)
        super().__init__(P, R, starts / starts.sum(), terminal, limit, terminated=D)
        self.desc = desc
        self.map_name = map_name
        self.is_slippery = is_slippery

    def __repr__(self) -> str:
        return f"FrozenLake({'x'.join(map(str, (len(self.desc), len(self.desc[0]))))}, is_slippery={self.is_slippery})"


# ---------------------------------------------------------------- CliffWalking
class CliffWalking(FiniteMDP):
    """gymnasium's CliffWalking-v1 as a :class:`FiniteMDP` (tables equal ``env.unwrapped.P``).

    A 4 x 12 grid; start at (3, 0), goal at (3, 11), the cells between are the
    cliff.  Actions: 0 up, 1 right, 2 down, 3 left; obs ``row * 12 + col``.
    Every move costs -1; stepping onto the cliff costs -100 and returns the
    agent to the start (the episode goes on); reaching the goal terminates.

    Args:
      is_slippery: gymnasium 1.x option (default False): the intended move
        and each perpendicular one happen with probability 1/3.

    No time limit (gymnasium registers none); set ``max_episode_steps`` on the
    params to add one.  Slippery caveat: from a few cells next to the start, a
    move can reach the start both by a plain move (-1) and by falling off the
    cliff (-100); the ``(S, A, S)`` reward table then holds their
    probability-weighted mean, so ``expected_reward`` is exact but a sampled
    reward is that mean rather than -1 or -100.
    """

    def __init__(self, is_slippery: bool = False):
        nrow, ncol = 4, 12
        start = 3 * ncol + 0
        goal = (3, ncol - 1)
        deltas = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}

        def outcomes(row, col, a):
            moves = [(a - 1) % 4, a, (a + 1) % 4] if is_slippery else [a]
            out = []
            for m in moves:
                r2 = min(max(row + deltas[m][0], 0), nrow - 1)
                c2 = min(max(col + deltas[m][1], 0), ncol - 1)
                if r2 == 3 and 1 <= c2 <= ncol - 2:
                    out.append((1 / len(moves), start, -100, False))
                else:
                    out.append((1 / len(moves), r2 * ncol + c2, -1, (r2, c2) == goal))
            return out

        transitions = [
            [outcomes(s // ncol, s % ncol, a) for a in range(4)] for s in range(nrow * ncol)
        ]
        init = torch.zeros(nrow * ncol, dtype=torch.float64)
        init[start] = 1.0
        P, R, D = _dense_tables(transitions)
        super().__init__(P, R, init, [goal[0] * ncol + goal[1]], None, terminated=D)
        self.is_slippery = is_slippery

    def __repr__(self) -> str:
        return f"CliffWalking(is_slippery={self.is_slippery})"


# ---------------------------------------------------------------- Taxi
_TAXI_MAP = [
    "+---------+",
    "|R: | : :G|",
    "| : | : : |",
    "| : : : : |",
    "| | : | : |",
    "|Y| : |B: |",
    "+---------+",
]
_TAXI_LOCS = [(0, 0), (0, 4), (4, 0), (4, 3)]


class Taxi(FiniteMDP):
    """gymnasium's Taxi-v3/v4 as a :class:`FiniteMDP` (tables equal ``env.unwrapped.P``).

    A 5 x 5 grid with walls and four pads R, G, Y, B.  The state index is
    gymnasium's ``((taxi_row * 5 + taxi_col) * 5 + passenger_location) * 4 +
    destination`` (passenger location 4: in the taxi), 500 states.  Actions:
    0 south, 1 north, 2 east, 3 west, 4 pickup, 5 dropoff.  Rewards: -1 per
    step, -10 for an illegal pickup/dropoff, +20 for delivering the
    passenger, which terminates.  Episodes start uniformly over the 300
    states with the passenger at a pad other than the destination.

    Args:
      is_rainy: gymnasium 1.x option: a move goes the intended way with
        probability ``rainy_probability`` and drifts left/right otherwise.
      rainy_probability: see ``is_rainy`` (default 0.8).

    Time limit: 200 steps.  gymnasium's ``fickle_passenger`` option keeps a
    hidden flag outside the state index, so it is not a finite MDP over these
    500 states and is not provided.
    """

    def __init__(self, is_rainy: bool = False, rainy_probability: float = 0.8):
        if not 0 <= rainy_probability <= 1:
            raise ValueError(f"rainy_probability: expected a probability in [0, 1], got {rainy_probability!r}")
        desc = _TAXI_MAP
        locs = _TAXI_LOCS
        lateral = (1.0 - rainy_probability) / 2.0
        max_row = max_col = 4

        def encode(row, col, pass_idx, dest_idx):
            return ((row * 5 + col) * 5 + pass_idx) * 4 + dest_idx

        def east_open(row, col):
            return desc[1 + row][2 * col + 2] == ":"

        def west_open(row, col):
            return desc[1 + row][2 * col] == ":"

        def pickup(loc, pass_idx):
            if pass_idx < 4 and loc == locs[pass_idx]:
                return 4, -1
            return pass_idx, -10

        def dropoff(loc, pass_idx, dest_idx):
            if loc == locs[dest_idx] and pass_idx == 4:
                return dest_idx, 20, True
            if loc in locs and pass_idx == 4:
                return locs.index(loc), -1, False
            return pass_idx, -10, False

        def dry(row, col, pass_idx, dest_idx, action):
            new_row, new_col, new_pass, reward, done = row, col, pass_idx, -1, False
            if action == 0:
                new_row = min(row + 1, max_row)
            elif action == 1:
                new_row = max(row - 1, 0)
            elif action == 2:
                if east_open(row, col):
                    new_col = min(col + 1, max_col)
            elif action == 3:
                if west_open(row, col):
                    new_col = max(col - 1, 0)
            elif action == 4:
                new_pass, reward = pickup((row, col), pass_idx)
            else:
                new_pass, reward, done = dropoff((row, col), pass_idx, dest_idx)
            return [(1.0, encode(new_row, new_col, new_pass, dest_idx), reward, done)]

        def drift(row, col, dr, dc):
            # gymnasium checks the wall beside the *destination* cell, not the origin
            r2, c2 = max(0, min(row + dr, max_row)), max(0, min(col + dc, max_col))
            if dc == 1 and desc[1 + r2][2 * c2] != ":":
                return row, col
            if dc == -1 and desc[1 + r2][2 * c2 + 2] != ":":
                return row, col
            return r2, c2

        # (forward, left, right) per heading, gymnasium's convention
        headings = {
            0: ((1, 0), (0, 1), (0, -1)),
            1: ((-1, 0), (0, -1), (0, 1)),
            2: ((0, 1), (-1, 0), (1, 0)),
            3: ((0, -1), (1, 0), (-1, 0)),
        }

        def rainy(row, col, pass_idx, dest_idx, action):
            if action >= 4:
                return dry(row, col, pass_idx, dest_idx, action)
            possible = (
                (action == 0 and row < max_row)
                or (action == 1 and row > 0)
                or (action == 2 and east_open(row, col))
                or (action == 3 and west_open(row, col))
            )
            new_row, new_col = row, col
            left = right = (row, col)
            if possible:
                dr, dc = headings[action][0]
                new_row, new_col = max(0, min(row + dr, max_row)), max(0, min(col + dc, max_col))
                left = drift(row, col, *headings[action][1])
                right = drift(row, col, *headings[action][2])
            return [
                (rainy_probability, encode(new_row, new_col, pass_idx, dest_idx), -1, False),
                (lateral, encode(left[0], left[1], pass_idx, dest_idx), -1, False),
                (lateral, encode(right[0], right[1], pass_idx, dest_idx), -1, False),
            ]

        build = rainy if is_rainy else dry
        transitions = [None] * 500
        init = torch.zeros(500, dtype=torch.float64)
        terminal = torch.zeros(500, dtype=torch.bool)
        for row in range(5):
            for col in range(5):
                for pass_idx in range(5):
                    for dest_idx in range(4):
                        s = encode(row, col, pass_idx, dest_idx)
                        if pass_idx < 4 and pass_idx != dest_idx:
                            init[s] = 1.0
                        # delivered: only a terminating dropoff enters these states
                        terminal[s] = pass_idx == dest_idx
                        transitions[s] = [build(row, col, pass_idx, dest_idx, a) for a in range(6)]
        P, R, D = _dense_tables(transitions)
        super().__init__(P, R, init / init.sum(), terminal, 200, terminated=D)
        self.is_rainy = is_rainy

    @staticmethod
    def decode(s: int) -> tuple[int, int, int, int]:
        """State index -> ``(taxi_row, taxi_col, passenger_location, destination)``."""
        s = int(s)
        dest = s % 4
        s //= 4
        pass_loc = s % 5
        s //= 5
        return s // 5, s % 5, pass_loc, dest

    @staticmethod
    def encode(taxi_row: int, taxi_col: int, passenger_location: int, destination: int) -> int:
        """``(taxi_row, taxi_col, passenger_location, destination)`` -> state index (gymnasium's)."""
        return ((taxi_row * 5 + taxi_col) * 5 + passenger_location) * 4 + destination

    def __repr__(self) -> str:
        return f"Taxi(is_rainy={self.is_rainy})"
