"""Small sequence tasks for "pretrain a tiny transformer on demonstrations, then RL-fine-tune it".

Every task is a :class:`Task`: a vocabulary, fixed prompt and completion
lengths, and three pure functions

* ``prompts(key, n)`` -> ``(tokens [n, P] int64, mask [n, P] bool)``,
* ``demonstrations(key, n)`` -> ``(prompt [n, P], prompt_mask [n, P],
  completion [n, L], completion_mask [n, L])`` for supervised pretraining,
* ``reward(prompt [P], prompt_mask [P], completion [L], completion_mask [L])``
  -> float32 ``()`` in ``[0, 1]`` for ONE example (callers vmap it).

All randomness comes from :mod:`funrl.random` keys, nothing branches on tensor
values, so every function works under ``torch.func.vmap`` over keys (or over
examples, for ``reward``) and gives the same numbers as a Python loop.

Conventions: prompts are left-padded with ``pad_id`` (mask False) to exactly
``prompt_len`` tokens; a completion ends at (and includes) the first
``eos_id``; ``completion_mask`` is True up to and including that token and
False after (tokens there are ``pad_id`` in demonstrations).  The rewards also
ignore everything after the first real ``eos_id`` themselves, so a caller that
passes an all-True mask gets the same reward.

Tasks (``make(name, **kwargs)``; ``list_tasks()``):

* ``"random-walks"``: trlx's random-walks example (shortest paths to a goal
  node in a random directed graph, scored by optimality).
* ``"sort"``: sort ``k`` digits.
* ``"add"``: add two numbers in ``[0, max_operand]``.
"""

from __future__ import annotations

import difflib
from collections import deque
from typing import Callable, NamedTuple

import numpy as np
import torch

from funrl import random as frandom

__all__ = ["Task", "TASKS", "make", "list_tasks", "random_walks", "sort", "add"]


# --------------------------------------------------------------------------- Task
class Task(NamedTuple):
    """A sequence task: vocabulary, shapes, and pure prompt / demonstration / reward functions.

    Fields:
      name: the task's registry name.
      vocab: tuple of display strings, ``vocab[token_id]`` (``len(vocab) == vocab_size``).
      prompt_len: ``P``, every prompt has exactly ``P`` tokens (left-padded with ``pad_id``).
      max_new_tokens: ``L``, the completion budget.
      pad_id: padding token id.
      eos_id: the token that ends a completion (part of the completion).
      prompts: ``prompts(key, n) -> (tokens [n, P] int64, mask [n, P] bool)``.
      reward: ``reward(prompt [P], prompt_mask [P], completion [L],
        completion_mask [L]) -> float32 ()`` in ``reward_range``; one example.
      demonstrations: ``demonstrations(key, n) -> (prompt [n, P] int64,
        prompt_mask [n, P] bool, completion [n, L] int64, completion_mask [n, L] bool)``.
      reward_range: ``(low, high)`` bounds of the reward.
      info: task-specific extras (e.g. the graph of ``"random-walks"``), or None.
    """

    name: str
    vocab: tuple
    prompt_len: int
    max_new_tokens: int
    pad_id: int
    eos_id: int
    prompts: Callable
    reward: Callable
    demonstrations: Callable
    reward_range: tuple = (0.0, 1.0)
    info: dict | None = None

    @property
    def vocab_size(self) -> int:
        """Number of token ids, ``len(vocab)``."""
        return len(self.vocab)

    def decode(self, tokens, mask=None) -> str:
        """Human-readable text for token ids (host-side; for printing).

        Args:
          tokens: int tensor / array / list ``[T]`` (or ``[B, T]``: one line per row).
          mask: optional bool, same shape; tokens where it is False are left out.

        Returns:
          The tokens' ``vocab`` strings concatenated (ids outside the vocabulary
          print as ``'<?>'``); rows joined by newlines for 2-D input.
        """
        t = torch.as_tensor(tokens).detach().cpu()
        m = None if mask is None else torch.as_tensor(mask).detach().cpu().to(torch.bool)
        if m is not None and tuple(m.shape) != tuple(t.shape):
            raise ValueError(f"mask: expected shape {tuple(t.shape)} like tokens, got {tuple(m.shape)}")
        if t.ndim == 0:
            t = t.reshape(1)
            m = None if m is None else m.reshape(1)
        if t.ndim == 2:
            return "\n".join(self.decode(t[i], None if m is None else m[i]) for i in range(t.shape[0]))
        if t.ndim != 1:
            raise ValueError(f"tokens: expected 1 or 2 dimensions, got shape {tuple(t.shape)}")
        ids = t.tolist()
        keep = [True] * len(ids) if m is None else m.tolist()
        V = len(self.vocab)
        return "".join(
            (self.vocab[i] if 0 <= i < V else "<?>") for i, k in zip(ids, keep) if k
        )


# ----------------------------------------------------------------------- helpers
def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive Python int (number of examples), got {n!r}")
    return n


def _check_shape(x, shape: tuple, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor of shape {shape}, got {type(x).__name__}")
    if tuple(x.shape) != shape:
        raise ValueError(
            f"{name}: expected shape {shape} (one example; vmap over a batch), got {tuple(x.shape)}"
        )


def _check_reward_args(P, L, prompt, prompt_mask, completion, completion_mask):
    _check_shape(prompt, (P,), "prompt")
    _check_shape(prompt_mask, (P,), "prompt_mask")
    _check_shape(completion, (L,), "completion")
    _check_shape(completion_mask, (L,), "completion_mask")


def _check_int_arg(v, name: str, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected an int {rng}, got {v!r}")
    return v


def _before_first(is_stop: torch.Tensor) -> torch.Tensor:
    """``[..., L]`` bool: True at positions up to AND including the first True of ``is_stop``."""
    c = torch.cumsum(is_stop.to(torch.int64), dim=-1)
    return (c - is_stop.to(torch.int64)) == 0


def _real(completion: torch.Tensor, completion_mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``[L]`` bool: the caller's mask, also cut after the first real eos."""
    m = completion_mask.to(torch.bool)
    return m & _before_first((completion == eos_id) & m)


# ----------------------------------------------------------------- random walks
def _make_graph(n_nodes: int, p_edge: float, max_length: int, graph_seed: int, max_tries: int = 100_000):
    """Sample trlx's random graph (host-side, numpy, once).

    Returns (adjacency ``[n, n]`` bool ndarray, shortest ``[n]`` int ndarray of
    shortest path lengths to the goal in nodes, ``shortest[0] == 1``, tries).
    """
    rs = np.random.RandomState(graph_seed)
    for tries in range(1, max_tries + 1):
        adj = rs.rand(n_nodes, n_nodes) > (1 - p_edge)
        np.fill_diagonal(adj, False)
        if not np.all(adj[1:].sum(1)):
            continue
        adj[0, :] = False
        adj[0, 0] = True  # the goal is absorbing
        dist = {0: 1}
        q = deque([0])
        while q:
            v = q.popleft()
            for u in np.nonzero(adj[:, v])[0].tolist():
                if u not in dist:
                    dist[u] = dist[v] + 1
                    q.append(u)
        if all(u in dist and dist[u] < max_length for u in range(1, n_nodes)):
            shortest = np.array([dist[u] for u in range(n_nodes)], dtype=np.int64)
            return adj, shortest, tries
    raise ValueError(
        f"p_edge: no graph with n_nodes={n_nodes}, p_edge={p_edge} in {max_tries} draws has every "
        f"node reach the goal in fewer than max_length={max_length} nodes; raise p_edge or max_length"
    )


def random_walks(n_nodes: int = 21, p_edge: float = 0.1, max_length: int = 10, graph_seed: int = 1002) -> Task:
    """trlx's random-walks task: reach goal node 0 of a random directed graph by a shortest path.

    The graph (as in trlx/examples/randomwalks) is drawn once here with
    ``numpy.random.RandomState(graph_seed)``: each ordered pair ``i != j`` is an
    edge with probability ``p_edge``; it is redrawn until every node ``1..n-1``
    has an out-edge and reaches the goal in fewer than ``max_length`` nodes.
    Node 0 is the goal and absorbing (its only edge is ``0 -> 0``).  The default
    ``graph_seed=1002`` is trlx's seed (our redraw rule differs slightly, so the
    graph need not be trlx's).

    Tokens: node ids ``0..n-1`` (displayed ``'a', 'b', ...``; ``'a'`` is the
    goal) and ``pad_id = n`` (``'<pad>'``), so ``vocab_size = n + 1``.
    ``eos_id = 0``: a completion ends when it reaches the goal.

    * prompts: ``P = 1``, a uniform start node in ``1..n-1``.
    * completion: the rest of the path, ``L = max_length - 1`` tokens.
    * demonstrations: random walks (trlx's pretraining data): from the prompt's
      start, a uniformly random out-edge each step, until the goal or
      ``max_length`` nodes; completion = ``walk[1:]``, mask False and
      ``pad_id`` after the goal.  ``demonstrations(key, n)[:2] == prompts(key, n)``.
      Measured mean optimality (reward) of the demonstrations with the default
      arguments: 0.784 (0.7839, 0.7854, 0.7838 over 100,000 walks each from
      ``key(0)``, ``key(1)``, ``key(2)``; 3.4% of walks miss the goal and score
      0); trlx's walks score about 0.77.
    * reward: trlx's optimality.  ``path = [start] + completion`` up to and
      including the first goal token; ``length = len(path)`` nodes.  The length
      is infinite (reward 0) if a step ``path[t] -> path[t+1]`` is not an edge,
      a token is not a node (e.g. pad), a token up to the goal is masked out,
      the goal is never reached within the budget, or the prompt is not one
      real node in ``1..n-1``.  Else
      ``reward = clip((max_length - length) / (max_length - shortest[start]), 0, 1)``
      with ``shortest`` the BFS shortest path lengths in nodes (so an optimal
      path scores 1, a path of ``max_length`` nodes scores 0).

    Args:
      n_nodes: number of nodes, in ``[2, 26]``.
      p_edge: edge probability in ``(0, 1]``.
      max_length: most nodes in a path, start included, ``>= 2``.
      graph_seed: seed of the graph (a Python int ``>= 0``).

    Returns:
      The :class:`Task`; ``info`` holds ``adjacency`` (bool ``[n, n]``),
      ``shortest_lengths`` (int64 ``[n]``, in nodes) and ``max_length``.
    """
    _check_int_arg(n_nodes, "n_nodes", 2, 26)
    if isinstance(p_edge, bool) or not isinstance(p_edge, (int, float)) or not 0.0 < p_edge <= 1.0:
        raise ValueError(f"p_edge: expected a float in (0, 1], got {p_edge!r}")
    _check_int_arg(max_length, "max_length", 2)
    _check_int_arg(graph_seed, "graph_seed", 0, 2**32 - 1)
    adj_np, shortest_np, _ = _make_graph(n_nodes, float(p_edge), max_length, graph_seed)

    n = n_nodes
    P, L = 1, max_length - 1
    pad_id, eos_id, goal = n, 0, 0
    vocab = tuple(chr(ord("a") + i) for i in range(n)) + ("<pad>",)
    adj = torch.as_tensor(adj_np, dtype=torch.bool)
    adj_flat = adj.reshape(-1)
    out_degree = adj.sum(1).to(torch.int64)  # [n]
    # edge_rank[u, j]: 0-based rank of edge u->j among u's out-edges (valid where adj[u, j])
    edge_rank = torch.cumsum(adj.to(torch.int64), dim=1) - 1
    shortest = torch.as_tensor(shortest_np, dtype=torch.int64)

    def prompts(key, n_prompts):
        """``(key, n) -> (tokens [n, 1] int64, mask [n, 1] bool)``: uniform start nodes in ``1..n_nodes-1``."""
        n_prompts = _check_n(n_prompts)
        k = frandom._check_key(key)
        start = frandom.randint(k, (n_prompts, 1), 1, n)
        return start, torch.ones_like(start, dtype=torch.bool)

    def demonstrations(key, n_demos):
        """``(key, n) -> (prompt [n,1], prompt_mask [n,1], completion [n,L], completion_mask [n,L])``: random walks."""
        n_demos = _check_n(n_demos)
        k = frandom._check_key(key)
        prompt, prompt_mask = prompts(k, n_demos)
        step_keys = frandom.split(frandom.fold_in(k, 1), L)
        node = prompt[:, 0]
        nodes = []
        for t in range(L):
            # the j-th out-edge of `node`, j uniform in [0, out_degree[node])
            j = frandom.randint(step_keys[t], (n_demos,), 0, out_degree.to(node.device)[node])
            rank = edge_rank.to(node.device)[node]  # [n, n_nodes]
            hit = adj.to(node.device)[node] & (rank == j[:, None])
            node = torch.argmax(hit.to(torch.int64), dim=1)
            nodes.append(node)
        walk = torch.stack(nodes, dim=1)  # [n, L]; stays at the absorbing goal once there
        cmask = _before_first(walk == goal)
        completion = torch.where(cmask, walk, torch.full_like(walk, pad_id))
        return prompt, prompt_mask, completion, cmask

    def reward(prompt, prompt_mask, completion, completion_mask):
        """One example's optimality, float32 ``()`` in ``[0, 1]`` (see :func:`random_walks`)."""
        _check_reward_args(P, L, prompt, prompt_mask, completion, completion_mask)
        dev = completion.device
        start = prompt[-1].to(torch.int64)
        start_ok = prompt_mask[-1].to(torch.bool) & (start >= 1) & (start < n)
        toks = completion.to(torch.int64)
        m = completion_mask.to(torch.bool)
        is_node = (toks >= 0) & (toks < n)
        upto = _before_first((toks == goal) & m)  # path positions, through the first real goal
        reached = torch.any((toks == goal) & m)
        prev = torch.cat([start.reshape(1), toks[:-1]])
        prev_c = prev.clamp(0, n - 1)
        cur_c = toks.clamp(0, n - 1)
        edge = adj_flat.to(dev)[prev_c * n + cur_c] & is_node & (prev >= 0) & (prev < n)
        step_ok = torch.where(upto, edge & m, torch.ones_like(m))
        valid = start_ok & reached & torch.all(step_ok)
        length = 1 + upto.to(torch.int64).sum()
        best = shortest.to(dev)[start.clamp(0, n - 1)]
        denom = (max_length - best).clamp(min=1)
        r = ((max_length - length).to(torch.float32) / denom.to(torch.float32)).clamp(0.0, 1.0)
        return torch.where(valid, r, torch.zeros_like(r))

    info = {"adjacency": adj, "shortest_lengths": shortest, "max_length": max_length}
    return Task(
        name="random-walks",
        vocab=vocab,
        prompt_len=P,
        max_new_tokens=L,
        pad_id=pad_id,
        eos_id=eos_id,
        prompts=prompts,
        reward=reward,
        demonstrations=demonstrations,
        info=info,
    )


# ------------------------------------------------------------------------- sort
def sort(k: int = 4) -> Task:
    """Sort ``k`` digits.

    Vocab: ``'0'..'9'`` (ids 0-9), SEP ``'>'`` (10), EOS ``'.'`` (11), pad ``'_'`` (12).

    * prompts: ``k`` uniform digits then SEP (``P = k + 1``, no padding), e.g. ``"3141>"``.
    * completion: the digits sorted ascending then EOS (``L = k + 1``), e.g. ``"1134."``.
    * demonstrations: the correct completions (reward 1).
    * reward: ``(number of positions i < k with completion[i] == sorted[i]
      and position i real) / k``.  A position is real if ``completion_mask`` is
      True there and no real EOS comes before it; EOS placement itself earns
      nothing (a missing or early-but-after-k EOS costs nothing, an early EOS
      loses the positions after it).

    Args:
      k: number of digits, ``>= 1``.
    """
    _check_int_arg(k, "k", 1)
    P, L = k + 1, k + 1
    sep_id, eos_id, pad_id = 10, 11, 12
    vocab = tuple(str(d) for d in range(10)) + (">", ".", "_")

    def prompts(key, n):
        """``(key, n) -> (tokens [n, k+1] int64, mask [n, k+1] bool)``: ``k`` digits then SEP."""
        n = _check_n(n)
        kk = frandom._check_key(key)
        digits = frandom.randint(kk, (n, k), 0, 10)
        tokens = torch.cat([digits, torch.full_like(digits[:, :1], sep_id)], dim=1)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)

    def demonstrations(key, n):
        """``(key, n) -> (prompt, prompt_mask [n, k+1], completion, completion_mask [n, k+1])``.

        The completions are the sorted digits then EOS (reward 1)."""
        prompt, prompt_mask = prompts(key, n)
        s = torch.sort(prompt[:, :k], dim=1).values
        completion = torch.cat([s, torch.full_like(s[:, :1], eos_id)], dim=1)
        return prompt, prompt_mask, completion, torch.ones_like(completion, dtype=torch.bool)

    def reward(prompt, prompt_mask, completion, completion_mask):
        """One example's fraction of correctly sorted positions, float32 ``()`` in ``[0, 1]``."""
        _check_reward_args(P, L, prompt, prompt_mask, completion, completion_mask)
        target = torch.sort(prompt[:k].to(torch.int64)).values
        real = _real(completion, completion_mask, eos_id)[:k]
        correct = (completion[:k].to(torch.int64) == target) & real
        return correct.to(torch.float32).sum() / k

    return Task(
        name="sort",
        vocab=vocab,
        prompt_len=P,
        max_new_tokens=L,
        pad_id=pad_id,
        eos_id=eos_id,
        prompts=prompts,
        reward=reward,
        demonstrations=demonstrations,
    )


# -------------------------------------------------------------------------- add
def _digits(x: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decimal digits of non-negative ``x [...]``, right-aligned in ``width`` slots.

    Returns (digits ``[..., width]`` most significant first, used ``[..., width]``
    bool: False for leading zeros, but the last slot is always used so 0 -> "0").
    """
    digits, used = [], []
    for j in range(width - 1, -1, -1):  # slot for 10**j
        p = 10**j
        digits.append(torch.div(x, p, rounding_mode="floor") % 10)
        used.append((x >= p) | (j == 0))
    return torch.stack(digits, dim=-1), torch.stack(used, dim=-1)


def _compact(tokens: torch.Tensor, used: torch.Tensor, pad_id: int, left: bool):
    """Move the used tokens of ``[..., T]`` together, in order: to the right end
    (``left=False`` pads on the left) or the left end (``left=True``).  Returns (tokens, mask)."""
    key = used.to(torch.int64) if not left else (~used).to(torch.int64)
    order = torch.sort(key, dim=-1, stable=True).indices
    t = torch.gather(tokens, -1, order)
    m = torch.gather(used, -1, order)
    return torch.where(m, t, torch.full_like(t, pad_id)), m


def add(max_operand: int = 99) -> Task:
    """Add two numbers ``a, b`` uniform in ``[0, max_operand]``.

    Vocab: ``'0'..'9'`` (ids 0-9), ``'+'`` (10), ``'='`` (11), EOS ``'.'`` (12), pad ``'_'`` (13).

    * prompts: ``a`` and ``b`` written without leading zeros, ``"a+b="``,
      left-padded with pad (mask False) to ``P = 2 * D + 2`` tokens, ``D`` the
      digits of ``max_operand`` (``P = 6`` by default), e.g. ``"__7+5="``.
    * completion: the digits of ``a + b`` (most significant first, no leading
      zeros) then EOS, pad after; ``L = digits(2 * max_operand) + 1`` (4 by default).
    * demonstrations: the correct completions (reward 1).
    * reward: the answer is the real completion tokens before the first real
      EOS (all real tokens if there is none).  ``1.0`` if the answer is exactly
      the sum's digits; else ``(number of positions i with answer[i] ==
      sum_digits[i]) / max(len(sum_digits), len(answer))``, positions counted
      from the most significant digit (so extra or missing digits cost
      credit, and only an exact answer scores 1).

    Args:
      max_operand: largest operand, ``>= 1``.
    """
    _check_int_arg(max_operand, "max_operand", 1)
    D = len(str(max_operand))
    DS = len(str(2 * max_operand))
    P, L = 2 * D + 2, DS + 1
    plus_id, eq_id, eos_id, pad_id = 10, 11, 12, 13
    vocab = tuple(str(d) for d in range(10)) + ("+", "=", ".", "_")

    def prompts(key, n):
        """``(key, n) -> (tokens [n, P] int64, mask [n, P] bool)``: ``"a+b="`` left-padded."""
        n = _check_n(n)
        kk = frandom._check_key(key)
        ab = frandom.randint(kk, (n, 2), 0, max_operand + 1)
        da, ua = _digits(ab[:, 0], D)
        db, ub = _digits(ab[:, 1], D)
        plus = torch.full_like(da[:, :1], plus_id)
        eq = torch.full_like(da[:, :1], eq_id)
        yes = torch.ones_like(ua[:, :1])
        tokens = torch.cat([da, plus, db, eq], dim=1)
        used = torch.cat([ua, yes, ub, yes], dim=1)
        return _compact(tokens, used, pad_id, left=False)

    def _operands(prompt, prompt_mask):
        """``a + b`` ``[...]`` from real prompt tokens ``[..., P]`` (digits before '+' and after)."""
        toks = prompt.to(torch.int64)
        m = prompt_mask.to(torch.bool)
        is_digit = m & (toks >= 0) & (toks < 10)
        after_plus = torch.cumsum((m & (toks == plus_id)).to(torch.int64), dim=-1) > 0
        a = torch.zeros_like(toks[..., 0])
        b = torch.zeros_like(a)
        for i in range(P):
            d = toks[..., i].clamp(0, 9)
            ia = is_digit[..., i] & ~after_plus[..., i]
            ib = is_digit[..., i] & after_plus[..., i]
            a = torch.where(ia, a * 10 + d, a)
            b = torch.where(ib, b * 10 + d, b)
        return a + b

    def demonstrations(key, n):
        """``(key, n) -> (prompt [n, P], prompt_mask [n, P], completion [n, L], completion_mask [n, L])``."""
        prompt, prompt_mask = prompts(key, n)
        s = _operands(prompt, prompt_mask)
        ds, us = _digits(s, DS)
        tokens = torch.cat([ds, torch.full_like(ds[:, :1], eos_id)], dim=1)
        used = torch.cat([us, torch.ones_like(us[:, :1])], dim=1)
        completion, cmask = _compact(tokens, used, pad_id, left=True)
        return prompt, prompt_mask, completion, cmask

    def reward(prompt, prompt_mask, completion, completion_mask):
        """One example's reward, float32 ``()`` in ``[0, 1]`` (see :func:`add`)."""
        _check_reward_args(P, L, prompt, prompt_mask, completion, completion_mask)
        s = _operands(prompt, prompt_mask)
        ds, us = _digits(s, DS)
        target, tmask = _compact(ds, us, pad_id, left=True)  # [DS], digits left-aligned
        target_len = tmask.to(torch.int64).sum()
        toks = completion.to(torch.int64)
        real = _real(toks, completion_mask, eos_id)
        answer = real & (toks != eos_id)  # a prefix of positions
        answer_len = answer.to(torch.int64).sum()
        target_full = torch.cat([target, torch.full((L - DS,), pad_id, dtype=torch.int64, device=toks.device)])
        tmask_full = torch.cat([tmask, torch.zeros(L - DS, dtype=torch.bool, device=toks.device)])
        hits = (answer & tmask_full & (toks == target_full)).to(torch.int64).sum()
        denom = torch.maximum(target_len, answer_len)
        return hits.to(torch.float32) / denom.to(torch.float32)

    return Task(
        name="add",
        vocab=vocab,
        prompt_len=P,
        max_new_tokens=L,
        pad_id=pad_id,
        eos_id=eos_id,
        prompts=prompts,
        reward=reward,
        demonstrations=demonstrations,
    )


# ---------------------------------------------------------------------- registry
TASKS: dict[str, Callable[..., Task]] = {
    "random-walks": random_walks,
    "sort": sort,
    "add": add,
}


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(TASKS)


def make(name: str, **kwargs) -> Task:
    """Build the task called ``name`` with its factory's keyword arguments.

    Raises:
      ValueError: unknown name (the message lists the known ones and close
        matches), or a bad argument (the message names it).
    """
    if not isinstance(name, str) or name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"name: unknown task {name!r}{hint}; known: {', '.join(list_tasks())}")
    return TASKS[name](**kwargs)
