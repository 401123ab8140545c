"""Tests for funrl.lm.tasks: shapes, purity, vmap == loop, valid demonstrations,
hand-checked rewards, rewards against independent plain-Python references, errors."""

from collections import deque

import pytest
import torch
from torch.func import vmap

from funrl import random as fr
from funrl.lm import tasks as T

# vmap-vs-loop identities
pytestmark = pytest.mark.exactness

NAMES = ["add", "random-walks", "sort"]


@pytest.fixture(scope="module")
def task_of():
    built = {name: T.make(name) for name in NAMES}
    return built.__getitem__


@pytest.fixture(scope="module")
def rw():
    return T.make("random-walks")


def _tok(task, s):
    """Display string -> token ids, one character per token (not for '<pad>')."""
    return [task.vocab.index(c) for c in s]


def _mask_upto_eos(tokens, eos_id):
    """Plain-Python completion mask: True up to and including the first eos."""
    out, done = [], False
    for t in tokens:
        out.append(not done)
        done = done or t == eos_id
    return out


def _f32(x):
    """A Python float rounded to float32 (rewards are float32)."""
    return torch.tensor(x, dtype=torch.float32).item()


def _r(task, prompt, completion, prompt_mask=None, completion_mask=None):
    """Reward of one example given as Python lists (masks default to the eos convention)."""
    if prompt_mask is None:
        prompt_mask = [True] * len(prompt)
    if completion_mask is None:
        completion_mask = _mask_upto_eos(completion, task.eos_id)
    out = task.reward(
        torch.tensor(prompt, dtype=torch.int64),
        torch.tensor(prompt_mask, dtype=torch.bool),
        torch.tensor(completion, dtype=torch.int64),
        torch.tensor(completion_mask, dtype=torch.bool),
    )
    assert out.dtype == torch.float32 and out.shape == ()
    return out.item()


# ------------------------------------------------------------- independent references
def _bfs_shortest(adj):
    """Plain-Python BFS over reversed edges: shortest path length to node 0, in nodes."""
    n = len(adj)
    dist = {0: 1}
    q = deque([0])
    while q:
        v = q.popleft()
        for u in range(n):
            if adj[u][v] and u not in dist:
                dist[u] = dist[v] + 1
                q.append(u)
    return dist


def _ref_rw(adj, shortest, max_length, start, completion, completion_mask):
    """trlx's optimality in plain Python."""
    n = len(adj)
    if not (1 <= start < n):
        return 0.0
    path = [start]
    reached = False
    for tok, m in zip(completion, completion_mask):
        if not m:
            break
        path.append(tok)
        if tok == 0:
            reached = True
            break
    if not reached:
        return 0.0
    for u, v in zip(path[:-1], path[1:]):
        if not (0 <= v < n) or not adj[u][v]:
            return 0.0
    return min(1.0, max(0.0, (max_length - len(path)) / (max_length - shortest[start])))


def _answer(task, completion, completion_mask):
    """Real tokens before the first eos (plain Python)."""
    out = []
    for tok, m in zip(completion, completion_mask):
        if not m or tok == task.eos_id:
            break
        out.append(tok)
    return out


def _ref_sort(task, prompt, completion, completion_mask):
    k = task.prompt_len - 1
    target = sorted(prompt[:k])
    # real positions: masked True and no eos strictly before (eos itself is a real position)
    real, seen_eos = [], False
    for tok, m in zip(completion, completion_mask):
        ok = m and not seen_eos
        real.append(ok)
        seen_eos = seen_eos or (ok and tok == task.eos_id)
    return sum(1 for i in range(k) if real[i] and completion[i] == target[i]) / k


def _ref_add(task, prompt, prompt_mask, completion, completion_mask):
    text = task.decode(prompt, prompt_mask)
    a, b = text.rstrip("=").split("+")
    target = [int(c) for c in str(int(a) + int(b))]
    ans = _answer(task, completion, completion_mask)
    if ans == target:
        return 1.0
    hits = sum(1 for x, y in zip(ans, target) if x == y)
    return hits / max(len(ans), len(target))


def _reference(task, prompt, prompt_mask, completion, completion_mask):
    if task.name == "random-walks":
        adj = task.info["adjacency"].tolist()
        shortest = task.info["shortest_lengths"].tolist()
        start = prompt[0] if prompt_mask[0] else -1
        return _ref_rw(adj, shortest, task.info["max_length"], start, completion, completion_mask)
    if task.name == "sort":
        return _ref_sort(task, prompt, completion, completion_mask)
    return _ref_add(task, prompt, prompt_mask, completion, completion_mask)


def _random_completions(task, key, n):
    """Uniform tokens over the whole vocabulary, masked up to the first eos; plus
    demonstrations with one token replaced by a random one (near-misses)."""
    k1, k2, k3, k4 = fr.split(key, 4)
    p, pm = task.prompts(k1, n)
    c = fr.randint(k2, (n, task.max_new_tokens), 0, task.vocab_size)
    cm = torch.tensor([_mask_upto_eos(row, task.eos_id) for row in c.tolist()], dtype=torch.bool)
    dp, dpm, dc, dcm = task.demonstrations(k3, n)
    ka, kb = fr.split(k4)
    pos = fr.randint(ka, (n,), 0, task.max_new_tokens)
    val = fr.randint(kb, (n,), 0, task.vocab_size)
    dc = dc.clone()
    dc[torch.arange(n), pos] = val
    dcm = torch.tensor([_mask_upto_eos(row, task.eos_id) for row in dc.tolist()], dtype=torch.bool)
    return (torch.cat([p, dp]), torch.cat([pm, dpm]), torch.cat([c, dc]), torch.cat([cm, dcm]))


# --------------------------------------------------------------------- registry / errors
def test_registry_and_make_errors():
    assert T.list_tasks() == ["add", "random-walks", "sort"]
    assert set(T.TASKS) == set(NAMES)
    for name in NAMES:
        task = T.make(name)
        assert isinstance(task, T.Task) and task.name == name
        assert task.vocab_size == len(task.vocab)
        assert task.reward_range == (0.0, 1.0)
    with pytest.raises(ValueError, match=r"did you mean random-walks.*known: add, random-walks, sort"):
        T.make("random_walks")
    with pytest.raises(ValueError, match=r"known: add, random-walks, sort"):
        T.make("chess")
    with pytest.raises(ValueError, match="n_nodes"):
        T.make("random-walks", n_nodes=1)
    with pytest.raises(ValueError, match="n_nodes"):
        T.make("random-walks", n_nodes=27)
    with pytest.raises(ValueError, match="p_edge"):
        T.make("random-walks", p_edge=0.0)
    with pytest.raises(ValueError, match="max_length"):
        T.make("random-walks", max_length=1)
    with pytest.raises(ValueError, match="graph_seed"):
        T.make("random-walks", graph_seed=-1)
    with pytest.raises(ValueError, match="k"):
        T.make("sort", k=0)
    with pytest.raises(ValueError, match="max_operand"):
        T.make("add", max_operand=0)
    with pytest.raises(TypeError):
        T.make("sort", digits=3)


@pytest.mark.parametrize("name", NAMES)
def test_call_errors(task_of, name):
    task = task_of(name)
    key = fr.key(0)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=r"^n:"):
            task.prompts(key, bad)
        with pytest.raises(ValueError, match=r"^n:"):
            task.demonstrations(key, bad)
    with pytest.raises(ValueError, match=r"^key:"):
        task.prompts(fr.split(key, 2), 3)
    with pytest.raises(TypeError, match=r"^key:"):
        task.demonstrations(key.to(torch.int32), 3)
    p, pm, c, cm = task.demonstrations(key, 2)
    with pytest.raises(ValueError, match=r"^completion:"):
        task.reward(p[0], pm[0], c, cm[0])
    with pytest.raises(ValueError, match=r"^prompt_mask:"):
        task.reward(p[0], pm, c[0], cm[0])


# ----------------------------------------------------------------------- shapes, purity
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(task_of, name):
    task = task_of(name)
    P, L = task.prompt_len, task.max_new_tokens
    p, pm = task.prompts(fr.key(3), 7)
    assert p.shape == (7, P) and p.dtype == torch.int64
    assert pm.shape == (7, P) and pm.dtype == torch.bool
    dp, dpm, dc, dcm = task.demonstrations(fr.key(3), 7)
    assert dp.shape == (7, P) and dp.dtype == torch.int64
    assert dpm.shape == (7, P) and dpm.dtype == torch.bool
    assert dc.shape == (7, L) and dc.dtype == torch.int64
    assert dcm.shape == (7, L) and dcm.dtype == torch.bool
    for x in (p, dc):
        assert int(x.min()) >= 0 and int(x.max()) < task.vocab_size
    # demonstrations use the prompts of the same key
    assert torch.equal(dp, p) and torch.equal(dpm, pm)
    # prompts are left-padded: mask is False then True, pads exactly where masked out
    for row, mrow in zip(dp.tolist(), dpm.tolist()):
        first = mrow.index(True)
        assert mrow == [False] * first + [True] * (P - first)
        assert all((t == task.pad_id) == (not m) for t, m in zip(row, mrow))
    # completion masks: True up to and including the first eos, pad after
    for row, mrow in zip(dc.tolist(), dcm.tolist()):
        assert mrow == _mask_upto_eos(row, task.eos_id)
        assert all(t == task.pad_id for t, m in zip(row, mrow) if not m)
        assert all(t != task.pad_id for t, m in zip(row, mrow) if m)


@pytest.mark.parametrize("name", NAMES)
def test_pure(task_of, name):
    task = task_of(name)
    for fn in (task.prompts, task.demonstrations):
        a = fn(fr.key(11), 64)
        b = fn(fr.key(11), 64)
        c = fn(fr.key(12), 64)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not torch.equal(a[0], c[0])
        assert not torch.equal(a[-2], c[-2])


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_equals_loop(task_of, name):
    task = task_of(name)
    keys = fr.split(fr.key(5), 4)
    for fn in (task.prompts, task.demonstrations):
        batched = vmap(lambda k: fn(k, 6))(keys)
        for i in range(4):
            single = fn(keys[i], 6)
            assert len(batched) == len(single)
            for b, s in zip(batched, single):
                assert b.dtype == s.dtype
                assert torch.equal(b[i], s)


@pytest.mark.parametrize("name", NAMES)
def test_reward_vmap_equals_loop_and_reference(task_of, name):
    """Random and near-miss completions: vmap == loop exactly, rewards in [0, 1], and equal
    to an independent plain-Python reimplementation of the documented reward."""
    task = task_of(name)
    p, pm, c, cm = _random_completions(task, fr.key(21), 300)
    batched = vmap(task.reward)(p, pm, c, cm)
    assert batched.shape == (600,) and batched.dtype == torch.float32
    loop = torch.stack([task.reward(p[i], pm[i], c[i], cm[i]) for i in range(600)])
    assert torch.equal(batched, loop)
    assert bool(((batched >= 0) & (batched <= 1)).all())
    ref = torch.tensor(
        [_reference(task, *(x[i].tolist() for x in (p, pm, c, cm))) for i in range(600)],
        dtype=torch.float32,
    )
    assert torch.equal(batched, ref)
    # the sample is not degenerate: it has zeros, partial credit and full credit
    assert bool((batched == 0).any()) and bool((batched == 1).any())
    assert bool(((batched > 0) & (batched < 1)).any())


@pytest.mark.parametrize("name", NAMES)
def test_reward_ignores_tokens_after_eos(task_of, name):
    task = task_of(name)
    L = task.max_new_tokens
    p, pm, c, _ = task.demonstrations(fr.key(8), 300)
    # put an eos at a random position j (keeping the demonstration before it), pad after
    j = fr.randint(fr.key(10), (300, 1), 0, L + 1)
    pos = torch.arange(L)
    c = torch.where(pos < j, c, torch.where(pos == j, task.eos_id, task.pad_id))
    cm = torch.tensor([_mask_upto_eos(row, task.eos_id) for row in c.tolist()], dtype=torch.bool)
    base = vmap(task.reward)(p, pm, c, cm)
    assert bool((base > 0).any()) and bool((~cm).any())
    garbage = fr.randint(fr.key(9), c.shape, 0, task.vocab_size)
    c2 = torch.where(cm, c, garbage)
    assert not torch.equal(c2, c)
    assert torch.equal(vmap(task.reward)(p, pm, c2, cm), base)
    # even with an all-True mask: the reward cuts at the first eos itself
    assert torch.equal(vmap(task.reward)(p, pm, c2, torch.ones_like(cm)), base)


# ------------------------------------------------------------------------- random walks
def test_random_walks_graph(rw):
    adj = rw.info["adjacency"].tolist()
    n = len(adj)
    assert n == 21 and rw.vocab_size == 22 and rw.pad_id == 21 and rw.eos_id == 0
    assert rw.prompt_len == 1 and rw.max_new_tokens == 9 and rw.info["max_length"] == 10
    assert rw.vocab[:3] == ("a", "b", "c") and rw.vocab[21] == "<pad>"
    assert adj[0] == [True] + [False] * 20  # goal is absorbing
    assert all(not adj[u][u] for u in range(1, n))
    assert all(any(adj[u]) for u in range(1, n))
    dist = _bfs_shortest(adj)
    assert all(u in dist and dist[u] < 10 for u in range(1, n))
    assert rw.info["shortest_lengths"].tolist() == [dist[u] for u in range(n)]
    # fixed graph_seed -> same graph; another seed -> another graph
    assert torch.equal(T.make("random-walks").info["adjacency"], rw.info["adjacency"])
    assert not torch.equal(T.make("random-walks", graph_seed=7).info["adjacency"], rw.info["adjacency"])


def test_random_walks_prompts_cover_starts(rw):
    p, pm = rw.prompts(fr.key(0), 2000)
    assert bool(pm.all())
    assert sorted(set(p[:, 0].tolist())) == list(range(1, 21))


def test_random_walks_demonstrations_valid(rw):
    adj = rw.info["adjacency"].tolist()
    p, pm, c, cm = rw.demonstrations(fr.key(4), 1000)
    ended_at_goal = 0
    for start, comp, m in zip(p[:, 0].tolist(), c.tolist(), cm.tolist()):
        walk = [start] + [t for t, k in zip(comp, m) if k]
        assert all(adj[u][v] for u, v in zip(walk[:-1], walk[1:]))
        assert 0 not in walk[1:-1]
        # ends at the goal, or has max_length nodes
        assert walk[-1] == 0 or len(walk) == 10
        ended_at_goal += walk[-1] == 0
    assert 900 < ended_at_goal < 1000  # most walks reach the goal, not all


def test_random_walks_demonstrations_pick_uniform_out_edges(rw):
    """Each step follows a uniformly random out-edge: per node, edge counts within 5 sigma of uniform."""
    adj = rw.info["adjacency"].tolist()
    p, pm, c, cm = rw.demonstrations(fr.key(77), 4000)
    counts = {}
    for start, comp, m in zip(p[:, 0].tolist(), c.tolist(), cm.tolist()):
        walk = [start] + [t for t, k in zip(comp, m) if k]
        for u, v in zip(walk[:-1], walk[1:]):
            counts.setdefault(u, {}).setdefault(v, 0)
            counts[u][v] += 1
    assert sorted(counts) == list(range(1, 21))
    for u, row in counts.items():
        out = [v for v in range(21) if adj[u][v]]
        assert sorted(row) == out  # every out-edge is used, nothing else
        total = sum(row.values())
        q = 1 / len(out)
        sigma = (total * q * (1 - q)) ** 0.5
        for v in out:
            assert abs(row[v] - total * q) <= 5 * sigma + 1e-9


def test_random_walks_demonstration_optimality(rw):
    adj = rw.info["adjacency"].tolist()
    shortest = _bfs_shortest(adj)
    p, pm, c, cm = rw.demonstrations(fr.key(2024), 1000)
    r = vmap(rw.reward)(p, pm, c, cm)
    ref = [
        _ref_rw(adj, shortest, 10, s, comp, m)
        for s, comp, m in zip(p[:, 0].tolist(), c.tolist(), cm.tolist())
    ]
    assert torch.equal(r, torch.tensor(ref, dtype=torch.float32))
    assert 0.6 <= r.mean().item() <= 0.9
    assert r.mean().item() == pytest.approx(sum(ref) / len(ref), rel=1e-6)


def test_random_walks_reward_hand_checked(rw):
    # Graph (graph_seed=1002) edges used here:
    #   g->b, g->q, q->k, k->a, b->a, p->i, i->p, p->n, n->b; g->a is not an edge.
    #   shortest lengths (nodes): g 3, p 4, i 4.
    adj = rw.info["adjacency"]
    tok = lambda s: _tok(rw, s)  # noqa: E731
    for u, v in ("gb", "gq", "qk", "ka", "ba", "pi", "ip", "pn", "nb"):
        assert bool(adj[tok(u)[0], tok(v)[0]])
    assert not bool(adj[tok("g")[0], tok("a")[0]])
    assert rw.info["shortest_lengths"][tok("gpi")].tolist() == [3, 4, 4]
    pad = rw.pad_id

    def R(start, comp, cmask=None, pmask=None):
        toks = [pad if ch == "_" else tok(ch)[0] for ch in comp]
        return _r(rw, tok(start), toks, pmask, cmask)

    assert R("g", "ba_______") == 1.0  # optimal: g b a
    assert R("g", "qka______") == _f32(6 / 7)  # one node longer: (10-4)/(10-3)
    assert R("i", "pipipnba_") == _f32(1 / 6)  # 9 nodes: (10-9)/(10-4)
    assert R("p", "ipipipnba") == 0.0  # reaches the goal at max_length nodes
    assert R("g", "a________") == 0.0  # g->a is not an edge
    assert R("g", "qqka_____") == 0.0  # self-loop q->q is not an edge
    assert R("p", "ipipipipi") == 0.0  # never reaches the goal
    assert R("g", "_ba______", cmask=[True] * 9) == 0.0  # pad among real tokens
    assert R("g", "ba_______", cmask=[True] + [False] * 8) == 0.0  # goal masked out
    assert R("g", "ba_______", pmask=[False]) == 0.0  # no real start node
    assert R("a", "a________") == 0.0  # start at the goal is not a valid prompt
    # garbage after the goal is ignored, masked or not
    assert R("g", "baqqgi_ca") == 1.0
    assert R("g", "baqqgi_ca", cmask=[True] * 9) == 1.0
    assert R("g", "qkaaaaaaa", cmask=[True] * 9) == _f32(6 / 7)


# --------------------------------------------------------------------------- sort / add
def test_sort_demonstrations_and_hand_checked(task_of):
    task = task_of("sort")
    assert task.vocab == tuple("0123456789") + (">", ".", "_")
    assert (task.prompt_len, task.max_new_tokens, task.eos_id, task.pad_id) == (5, 5, 11, 12)
    p, pm, c, cm = task.demonstrations(fr.key(6), 500)
    for prow, crow in zip(p.tolist(), c.tolist()):
        assert prow[4] == 10
        assert crow == sorted(prow[:4]) + [11]
    assert bool(pm.all()) and bool(cm.all())
    assert torch.equal(vmap(task.reward)(p, pm, c, cm), torch.ones(500))

    prompt = _tok(task, "3141>")  # sorted: 1134
    R = lambda s, m=None: _r(task, prompt, _tok(task, s), None, m)  # noqa: E731
    assert R("1134.") == 1.0
    assert R("11349") == 1.0  # eos placement earns nothing and costs nothing
    assert R("1143.") == 0.5
    assert R("4311.") == 0.0
    assert R("1.34_") == 0.25  # early eos: positions after it are not real
    assert R("1.34_", [True] * 5) == 0.25  # ...even if the mask says so
    assert R("1134.", [True, True, False, False, False]) == 0.5
    assert R("0134.") == 0.75


def test_add_demonstrations_and_hand_checked(task_of):
    task = task_of("add")
    assert task.vocab == tuple("0123456789") + ("+", "=", ".", "_")
    assert (task.prompt_len, task.max_new_tokens, task.eos_id, task.pad_id) == (6, 4, 12, 13)
    p, pm, c, cm = task.demonstrations(fr.key(7), 1000)
    lengths = set()
    for prow, pmrow, crow, cmrow in zip(p.tolist(), pm.tolist(), c.tolist(), cm.tolist()):
        text = task.decode(prow, pmrow)
        lengths.add(len(text))
        a, b = text[:-1].split("+")
        assert text.endswith("=") and str(int(a)) == a and str(int(b)) == b  # no leading zeros
        assert 0 <= int(a) <= 99 and 0 <= int(b) <= 99
        assert task.decode(crow, cmrow) == f"{int(a) + int(b)}."
    assert lengths == {4, 5, 6}  # prompts of every length, so padding is exercised
    assert torch.equal(vmap(task.reward)(p, pm, c, cm), torch.ones(1000))

    def R(prompt, comp, m=None):
        pt = [task.pad_id] * (6 - len(prompt)) + _tok(task, prompt)
        pmask = [False] * (6 - len(prompt)) + [True] * len(prompt)
        ct = [task.pad_id if ch == "_" else _tok(task, ch)[0] for ch in comp]
        return _r(task, pt, ct, pmask, m)

    assert R("7+5=", "12._") == 1.0
    assert R("7+5=", "13._") == 0.5  # 1 of 2 digits right
    assert R("7+5=", "21._") == 0.0  # digits in the wrong positions
    assert R("7+5=", "123.") == _f32(2 / 3)  # extra digit: 2 / max(2, 3)
    assert R("7+5=", "1.__") == 0.5  # missing digit: 1 / max(2, 1)
    assert R("7+5=", "1212", [True] * 4) == 0.5  # no eos: all 4 real tokens are the answer
    assert R("7+5=", "12.9", [True] * 4) == 1.0  # garbage after eos ignored
    assert R("7+5=", ".12_") == 0.0  # empty answer
    assert R("99+99=", "198.") == 1.0
    assert R("99+99=", "199.") == _f32(2 / 3)
    assert R("0+0=", "0.__") == 1.0
    assert R("0+0=", "00._") == 0.5


def test_decode(task_of, rw):
    add = task_of("add")
    prompt = torch.tensor([13, 13, 7, 10, 5, 11])
    mask = torch.tensor([False, False, True, True, True, True])
    assert add.decode(prompt, mask) == "7+5="
    assert add.decode(prompt) == "__7+5="
    assert add.decode([1, 2, 12, 13], [True, True, True, False]) == "12."
    assert add.decode(torch.stack([prompt, prompt]), torch.stack([mask, mask])) == "7+5=\n7+5="
    assert add.decode([99]) == "<?>"
    assert rw.decode([6, 1, 0, 21]) == "gba<pad>"
    assert task_of("sort").decode([3, 1, 4, 1, 10]) == "3141>"
    with pytest.raises(ValueError, match="mask"):
        add.decode(prompt, mask[:3])
