"""Seeds sharded across ``torch.distributed`` processes (``torchrun``).

``torchrun --nproc-per-node K -m funrl train ... --seeds S`` starts K processes;
:func:`funrl.run` sees torchrun's environment (``WORLD_SIZE > 1``), joins the
process group and gives each rank one contiguous block of seeds
(:func:`seed_block`: S = 5 over K = 2 is seeds 0-2 on rank 0 and 3-4 on rank 1).
Each rank trains its block vmapped exactly as a single process would train it
(seed *i* gets ``fold_in(key(seed), i)`` however the seeds are split), so the
results equal a single-process run, bit for bit on CPU in eager mode.  At each
checkpoint boundary rank 0 gathers every rank's state and metrics
(:func:`gather_tree_to_rank0`) and writes one seed-ordered checkpoint, so a run
resumes under any number of processes, or none.

Backends: gloo on CPU; with CUDA, ``cpu:gloo,cuda:nccl`` and one GPU per rank
(``cuda:LOCAL_RANK``, see :func:`local_device`).  What the ranks exchange
(statuses, per-update metrics, a state per checkpoint) travels as pickled CPU
objects, over gloo: small host-side aggregates, never per-step traffic.

Failure: every collective has a timeout (:data:`TIMEOUT_ENV`, seconds, default
300), and at each checkpoint boundary the ranks exchange their status
(:func:`raise_if_any_failed`), so when one rank raises, every rank stops at the
same boundary: the failed rank prints ``funrl: rank R failed: <error>`` to
stderr, the others raise :class:`RankFailed` naming it, and nothing after the
last good checkpoint is written (no ``summary.json``).  A rank killed outright
is noticed by torchrun, which stops the others; under another launcher they
stop at the timeout.

One interface for one process or many: :func:`context` gives :class:`Local`
(a single process, where every exchange is the identity) or :class:`Torchrun`
(the process group), with the same methods (``world``, ``on_main``,
``raise_if_any_failed``, ``broadcast``, ``gather_seeds``, ``scatter_blocks``),
so :mod:`funrl.runner` has one code path for both.

Testing hook: ``FUNRL_TEST_FAIL_RANK=R`` (:data:`FAIL_RANK_ENV`) makes rank R
raise ``RuntimeError`` after its first chunk of updates;
``FUNRL_TEST_FAIL_RANK=R:U`` after its first chunk that reaches update U (also
in a single process, as rank 0).  It exists only to test the failure path; never
set it otherwise.  :func:`with_failure_hook` adds it to a run's chunk callback
only while the variable is set.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import sys
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import torch

from funrl import tree

__all__ = [
    "World",
    "RankFailed",
    "Local",
    "Torchrun",
    "context",
    "world",
    "seed_block",
    "seed_blocks",
    "local_device",
    "timeout",
    "backend",
    "init",
    "cleanup",
    "broadcast_object",
    "gather_tree_to_rank0",
    "scatter_blocks_from_rank0",
    "raise_if_any_failed",
    "fail_after_update",
    "with_failure_hook",
    "TIMEOUT_ENV",
    "FAIL_RANK_ENV",
]

#: Seconds a collective may wait for the other ranks before raising.
TIMEOUT_ENV = "FUNRL_DIST_TIMEOUT_S"
#: Testing hook: ``R`` or ``R:U`` makes rank R raise (see the module docstring).
FAIL_RANK_ENV = "FUNRL_TEST_FAIL_RANK"
DEFAULT_TIMEOUT_S = 300.0


class World(NamedTuple):
    """This process's place in the job, from torchrun's environment.

    Attributes:
      rank: global rank in ``[0, world_size)``.
      world_size: number of processes (1: not distributed).
      local_rank: rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints results."""
        return self.rank == 0


class RankFailed(RuntimeError):
    """One or more ranks failed; every rank of the job raises this at the same boundary.

    Attributes:
      failures: ``{rank: "ErrorType: message"}`` of the ranks that failed.
      rank: the rank that raised this exception.
    """

    def __init__(self, failures: Mapping[int, str], rank: int):
        self.failures = dict(failures)
        self.rank = rank
        text = "; ".join(f"rank {r} failed: {msg}" for r, msg in sorted(self.failures.items()))
        super().__init__(text)


def _env_int(environ: Mapping[str, str], name: str, default: int | None) -> int:
    text = environ.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"{name}: expected an int in the environment (torchrun sets it), got nothing")
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an int, got {text!r}") from None


def world(environ: Mapping[str, str] | None = None) -> World:
    """Rank, world size and local rank from torchrun's variables (default: ``os.environ``).

    ``WORLD_SIZE`` unset or 1 is a single process.  With ``WORLD_SIZE > 1``,
    ``RANK`` must be set; ``LOCAL_RANK`` defaults to ``RANK``.

    Raises:
      ValueError: naming the variable, for a non-integer or out-of-range value.
    """
    env = os.environ if environ is None else environ
    size = _env_int(env, "WORLD_SIZE", 1)
    if size < 1:
        raise ValueError(f"WORLD_SIZE: expected an int >= 1, got {size}")
    if size == 1:
        return World(0, 1, 0)
    rank = _env_int(env, "RANK", None)
    if not 0 <= rank < size:
        raise ValueError(f"RANK: expected an int in [0, {size}), got {rank}")
    local = _env_int(env, "LOCAL_RANK", rank)
    if local < 0:
        raise ValueError(f"LOCAL_RANK: expected an int >= 0, got {local}")
    return World(rank, size, local)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")
    return value


def seed_block(num_seeds: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block of seeds that ``rank`` trains: ``(start, count)``.

    The first ``num_seeds % world_size`` ranks take one seed more than the
    rest, so the blocks of ranks ``0 .. world_size-1`` cover ``0 .. num_seeds-1``
    once, in order, with sizes that differ by at most one (``count`` is 0 for
    some ranks when ``num_seeds < world_size``).

    Raises:
      TypeError: an argument is not an int.
      ValueError: ``num_seeds < 0``, ``world_size < 1`` or ``rank`` outside ``[0, world_size)``.
    """
    _check_int(num_seeds, "num_seeds", 0)
    _check_int(world_size, "world_size", 1)
    _check_int(rank, "rank", 0)
    if rank >= world_size:
        raise ValueError(f"rank: expected an int in [0, world_size={world_size}), got {rank}")
    base, extra = divmod(num_seeds, world_size)
    start = rank * base + min(rank, extra)
    return start, base + (1 if rank < extra else 0)


def seed_blocks(num_seeds: int, world_size: int) -> list[tuple[int, int]]:
    """``[seed_block(num_seeds, r, world_size) for r in range(world_size)]``."""
    _check_int(world_size, "world_size", 1)
    return [seed_block(num_seeds, r, world_size) for r in range(world_size)]


def local_device(device: str, w: World) -> str:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for ``"cuda"`` under torchrun, else ``device``.

    Raises:
      ValueError: an explicit ``cuda:N`` under torchrun (each rank owns the GPU
        of its local rank), or fewer visible GPUs than local ranks.
    """
    if not isinstance(device, str):
        raise TypeError(f"device: expected a str like 'cpu' or 'cuda', got {type(device).__name__}")
    if not w.distributed or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise ValueError(f"device: under torchrun pass 'cuda' (each rank uses cuda:LOCAL_RANK), got {device!r}")
    count = torch.cuda.device_count()
    if w.local_rank >= count:
        raise ValueError(
            f"device: rank {w.rank} needs cuda:{w.local_rank} but only {count} GPU(s) are visible "
            "(start at most one process per GPU: --nproc-per-node <= GPUs)"
        )
    return f"cuda:{w.local_rank}"


def timeout(environ: Mapping[str, str] | None = None) -> datetime.timedelta:
    """The collective timeout: ``FUNRL_DIST_TIMEOUT_S`` seconds (default 300).

    Raises:
      ValueError: naming the variable, for a value that is not a number > 0.
    """
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV)
    if text is None:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}: expected a number of seconds > 0, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def backend(cuda_available: bool) -> str:
    """The process-group backend: ``"gloo"``, or ``"cpu:gloo,cuda:nccl"`` where CUDA is available.

    With both, CUDA tensors go through NCCL and CPU ones (every object funrl
    exchanges) through gloo, whatever device the run turns out to use: on
    resume the device is only known once rank 0 has read the run's config.
    NCCL connects lazily, on its first CUDA collective.
    """
    return "cpu:gloo,cuda:nccl" if cuda_available else "gloo"


def init(w: World) -> "Torchrun":
    """Join the process group (:func:`backend`, :func:`timeout`) unless the caller already did.

    Args:
      w: this process's :class:`World` (``w.distributed`` must be true).

    Returns:
      The context the other helpers take; pass it to :func:`cleanup` at the end.

    Raises:
      ValueError: ``w`` is not distributed, or an existing process group disagrees with it.
    """
    import torch.distributed as dist

    if not isinstance(w, World) or not w.distributed:
        raise ValueError(f"w: expected a World with world_size > 1, got {w!r}")
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend(torch.cuda.is_available()), timeout=timeout())
    elif dist.get_world_size() != w.world_size or dist.get_rank() != w.rank:
        raise ValueError(
            f"the process group already initialised has rank {dist.get_rank()} of {dist.get_world_size()}, "
            f"but the environment says rank {w.rank} of {w.world_size}"
        )
    return Torchrun(w, None, owned)


def cleanup(ctx: "Torchrun | Local | None", wait: bool = False) -> None:
    """Leave the process group if :func:`init` created it (safe to call twice or with None).

    ``wait=True`` (a clean exit) first waits for every rank at a barrier, so no
    rank closes its connections while a peer is still in a collective.  After
    the group is destroyed the garbage collector runs, so gloo's worker
    threads are joined now, while the interpreter is whole: a group freed only
    at interpreter shutdown can abort the process ("terminate called without
    an active exception") after a run that succeeded.
    """
    import torch.distributed as dist

    if isinstance(ctx, Torchrun) and ctx.owned and dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def _cpu(x):
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


def broadcast_object(obj: Any, ctx: "Torchrun") -> Any:
    """Rank 0's ``obj`` on every rank (a picklable Python object; tensors should be on CPU)."""
    import torch.distributed as dist

    box = [obj if ctx.world.main else None]
    dist.broadcast_object_list(box, src=0, group=ctx.group)
    return box[0]


def gather_tree_to_rank0(t: Any, ctx: "Torchrun", dim: int = 0) -> Any:
    """Every rank's pytree ``t``, concatenated in rank order along ``dim``, on rank 0 (None elsewhere).

    Args:
      t: a pytree of tensors with the same structure on every rank; leaf
        shapes may differ only along ``dim`` (e.g. a state, leaves
        ``[count_r, ...]``; metrics ``[count_r, U]``; both with ``dim=0``).
      ctx: from :func:`init`.
      dim: the seed axis.

    Returns:
      On rank 0 the concatenated tree (leaves ``[sum_r count_r, ...]`` along
      ``dim``) on CPU, in rank order, which is seed order; None on other ranks.
      Every rank must call it (a collective).
    """
    import torch.distributed as dist

    local = tree.map(_cpu, t)
    out = [None] * ctx.world.world_size if ctx.world.main else None
    dist.gather_object(local, out, dst=0, group=ctx.group)
    if not ctx.world.main:
        return None
    return tree.concatenate(out, dim=dim)


def scatter_blocks_from_rank0(t: Any, blocks: list[tuple[int, int]], ctx: "Torchrun", dim: int = 0) -> Any:
    """Rank r's slice ``[start_r, start_r + count_r)`` along ``dim`` of rank 0's pytree ``t``.

    Args:
      t: on rank 0, a pytree of tensors with leaves ``[S, ...]`` along ``dim``
        (ignored on other ranks).
      blocks: ``seed_blocks(S, world_size)``.
      ctx: from :func:`init`.

    Returns:
      This rank's block (CPU tensors, leaves ``[count_rank, ...]``).  A collective.
    """
    import torch.distributed as dist

    if len(blocks) != ctx.world.world_size:
        raise ValueError(f"blocks: expected one (start, count) per rank ({ctx.world.world_size}), got {len(blocks)}")
    parts = None
    if ctx.world.main:
        parts = [tree.map(lambda x: _cpu(x.narrow(dim, s, c)).clone(), t) for s, c in blocks]
    box = [None]
    dist.scatter_object_list(box, parts, src=0, group=ctx.group)
    return box[0]


def raise_if_any_failed(error: BaseException | None, ctx: "Torchrun") -> None:
    """Exchange every rank's status; if any rank failed, raise :class:`RankFailed` on all of them.

    A collective: call it at the same points on every rank (funrl calls it at
    each checkpoint boundary), with this rank's exception or None.  A failed
    rank prints ``funrl: rank R failed: <error>`` to stderr and re-raises
    ``error``; the other ranks raise :class:`RankFailed` naming every failed rank.
    """
    import torch.distributed as dist

    mine = None if error is None else f"{type(error).__name__}: {error}"
    if mine is not None:
        print(f"funrl: rank {ctx.world.rank} failed: {mine}", file=sys.stderr, flush=True)
    statuses: list = [None] * ctx.world.world_size
    dist.all_gather_object(statuses, mine, group=ctx.group)
    failures = {r: s for r, s in enumerate(statuses) if s is not None}
    if error is not None:
        raise error  # the failed rank keeps its own exception (type and traceback)
    if failures:
        raise RankFailed(failures, ctx.world.rank)


def fail_after_update(w: World, environ: Mapping[str, str] | None = None) -> int | None:
    """The testing hook: the update after which this rank must raise, or None.

    ``FUNRL_TEST_FAIL_RANK=R`` gives 0 on rank R (raise after the first chunk),
    ``R:U`` gives U.

    Raises:
      ValueError: naming the variable, for text that is not ``R`` or ``R:U``.
    """
    env = os.environ if environ is None else environ
    text = env.get(FAIL_RANK_ENV)
    if not text:
        return None
    rank_text, _, update_text = text.partition(":")
    try:
        rank, update = int(rank_text), int(update_text or 0)
    except ValueError:
        raise ValueError(f"{FAIL_RANK_ENV}: expected R or R:U (ints), got {text!r}") from None
    return update if rank == w.rank else None


def with_failure_hook(callback: Callable, w: World, environ: Mapping[str, str] | None = None) -> Callable:
    """``callback`` itself, or, while :data:`FAIL_RANK_ENV` names this rank, ``callback`` then a raise.

    The testing hook (see the module docstring) lives here, not in the run's
    callback: a run composes it in and, with the variable unset, runs exactly
    its own callback.

    Args:
      callback: ``callback(state, info)`` called after every chunk (``info.update``: the chunk's last update).
      w: this process's :class:`World`.

    Raises:
      ValueError: naming the variable, for text that is not ``R`` or ``R:U``.
    """
    fail_at = fail_after_update(w, environ)
    if fail_at is None:
        return callback
    text = (os.environ if environ is None else environ).get(FAIL_RANK_ENV)

    def failing(state, info):
        callback(state, info)
        if info.update >= fail_at:
            raise RuntimeError(f"{FAIL_RANK_ENV}={text}: rank {w.rank} raising after update {info.update} (testing hook)")

    return failing


# ------------------------------------------------------------------ one interface for one process or many
class Local:
    """A single process: it is rank 0 of 1, trains every seed, and every exchange is the identity.

    The same methods as :class:`Torchrun`, so a run has one code path for both.
    """

    world = World()

    def on_main(self, fn: Callable[[], Any], broadcast: bool = True) -> Any:
        """``fn()`` (there is only the main process)."""
        return fn()

    def raise_if_any_failed(self, error: BaseException | None) -> None:
        """Re-raise ``error`` if it is not None."""
        if error is not None:
            raise error

    def broadcast(self, obj: Any) -> Any:
        """``obj`` itself."""
        return obj

    def gather_seeds(self, t: Any, dim: int = 0) -> Any:
        """``t`` itself: this process holds every seed."""
        return t

    def scatter_blocks(self, t: Any, blocks: list[tuple[int, int]], dim: int = 0) -> Any:
        """``t`` itself: the one block is every seed (``blocks == [(0, S)]``)."""
        return t

    def close(self, wait: bool = False) -> None:
        """Nothing to leave."""


class Torchrun:
    """This rank of a ``torchrun`` job (from :func:`init`): the process group and the rank's :class:`World`.

    Attributes:
      world: this process's :class:`World`.
      group: the process group for host-side objects (None: the default group).
      owned: :func:`init` created the process group, so :meth:`close` destroys it.

    Every method but :meth:`close` is a collective: every rank calls it at the same point.
    """

    def __init__(self, world: World, group: Any = None, owned: bool = False):
        self.world, self.group, self.owned = world, group, owned

    def on_main(self, fn: Callable[[], Any], broadcast: bool = True) -> Any:
        """``fn()`` on rank 0, its result on every rank; an error there stops every rank.

        ``broadcast=False``: the result stays on rank 0 (the other ranks get
        None), for results only rank 0 uses.  The error is re-raised on rank 0;
        the other ranks raise :class:`RankFailed` (see :func:`raise_if_any_failed`).
        """
        result, error = None, None
        if self.world.main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - reported to every rank, re-raised on this one
                error = e
        raise_if_any_failed(error, self)
        return broadcast_object(result, self) if broadcast else result

    def raise_if_any_failed(self, error: BaseException | None) -> None:
        """:func:`raise_if_any_failed` for this job."""
        raise_if_any_failed(error, self)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (:func:`broadcast_object`)."""
        return broadcast_object(obj, self)

    def gather_seeds(self, t: Any, dim: int = 0) -> Any:
        """Every rank's block of ``t`` in seed order along ``dim``, on rank 0 (None elsewhere; :func:`gather_tree_to_rank0`)."""
        return gather_tree_to_rank0(t, self, dim)

    def scatter_blocks(self, t: Any, blocks: list[tuple[int, int]], dim: int = 0) -> Any:
        """This rank's block of rank 0's ``t`` (:func:`scatter_blocks_from_rank0`)."""
        return scatter_blocks_from_rank0(t, blocks, self, dim)

    def close(self, wait: bool = False) -> None:
        """Leave the process group if :func:`init` created it (:func:`cleanup`; ``wait``: barrier first)."""
        cleanup(self, wait)


@contextlib.contextmanager
def context(environ: Mapping[str, str] | None = None) -> Iterator["Local | Torchrun"]:
    """The job this process belongs to, for a ``with`` block: :class:`Local`, or :class:`Torchrun` under torchrun.

    Joins the process group on entry (``WORLD_SIZE > 1``, :func:`init`) and
    leaves it on exit if it joined it.
    """
    w = world(environ)
    ctx = init(w) if w.distributed else Local()
    try:
        yield ctx
    except BaseException:
        ctx.close()  # no barrier: a failed rank may never reach it
        raise
    ctx.close(wait=True)
