"""Atomic, safe checkpoint files for pytrees of tensors.

A checkpoint is written with ``torch.save`` but holds only plain containers
(dict, list, str, int, float, bool, None) and tensors, so :func:`load` reads it
with ``torch.load(weights_only=True)`` and never unpickles an arbitrary object.
The tree's *structure* is stored as a plain description that records each
container's kind; NamedTuple and registered-pytree nodes (e.g. dataclasses
registered with :func:`funrl.tree.register_dataclass`) are recorded by import
path and rebuilt on load only if the path names a NamedTuple class or a type
registered with ``torch.utils._pytree``, in a module that is already imported
(or part of funrl): loading never imports a module named inside a file.

Payload (format version 1)::

    {"format": "funrl-checkpoint", "version": 1,
     "tree": <structure>, "metadata": <structure>,
     "tensors": [tensor, ...], "sha256": <hex digest>}

The SHA-256 digest covers the structure descriptions and every tensor's dtype,
shape and bytes, so truncation or bit rot is detected as :class:`CheckpointError`
rather than returned as silently wrong weights.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed and ``fsync``-ed, moved over the destination with
``os.replace``, then the directory is ``fsync``-ed.  A crash leaves either the
old file or the new one, never a partial file under the destination name (a
stray ``.<name>.*.tmp`` file may remain after a hard kill).

:class:`CheckpointManager` (and :func:`save_latest` / :func:`load_latest`)
keep the last ``keep`` checkpoints of a run and fall back to an older one if
the newest is unreadable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import re
import sys
import tempfile
import warnings
from collections import OrderedDict
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
import torch.utils._pytree as _pytree

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "save",
    "load",
    "CheckpointManager",
    "save_latest",
    "load_latest",
    "write_json_atomic",
    "write_text_atomic",
    "FORMAT",
    "VERSION",
]

#: Value of the payload's ``"format"`` field.
FORMAT = "funrl-checkpoint"
#: Newest payload version this module writes and reads.
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing its structure, truncated, corrupt or unsafe."""


class CheckpointWarning(UserWarning):
    """An unusable checkpoint was skipped in favour of an older one."""


# --------------------------------------------------------------- atomic writes
def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # fallback: the only portable way to read the umask is to set it
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _atomic_write(path, write: Callable[[BinaryIO], None]) -> str:
    """Write a file atomically: temp file in the same directory, fsync, replace, fsync dir."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> str:
    """Atomically write ``text`` to ``path`` (parent directories are created).

    Returns:
      ``path`` as a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    data = text.encode(encoding)
    return _atomic_write(path, lambda f: f.write(data))


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"obj: cannot write a {type(obj).__name__} as JSON")


def write_json_atomic(path, obj: Any, indent: int | None = 2, allow_nan: bool = True) -> str:
    """Atomically write ``obj`` as JSON (plus a trailing newline) to ``path``.

    Tensors and numpy arrays/scalars are written as (nested) lists/numbers.
    ``allow_nan=False`` makes NaN/inf a ``ValueError`` (strict JSON); the
    default writes them as ``NaN``/``Infinity`` like Python's ``json``.  The
    object is serialised before the file is touched, so a failure leaves any
    old file intact.

    Returns:
      ``path`` as a string.
    """
    text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=allow_nan) + "\n"
    return write_text_atomic(path, text)


# ------------------------------------------------------------ structure codec
def _type_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _lookup(path: str):
    """Resolve ``module:qualname`` without importing modules outside funrl."""
    module, _, qual = path.partition(":")
    if not module or not qual:
        raise LookupError(f"malformed type path {path!r}")
    mod = sys.modules.get(module)
    if mod is None:
        if module == "funrl" or module.startswith("funrl."):
            mod = importlib.import_module(module)
        else:
            raise LookupError(
                f"type {path} lives in module {module!r}, which is not imported; import it "
                "before loading (load never imports modules named inside a file)"
            )
    obj = mod
    for part in qual.split("."):
        if part == "<locals>" or not hasattr(obj, part):
            raise LookupError(f"type {path} not found in module {module!r}")
        obj = getattr(obj, part)
    return obj


def _is_namedtuple_type(cls) -> bool:
    return isinstance(cls, type) and _pytree.is_namedtuple_class(cls)


def _registered_node(cls) -> bool:
    return (
        isinstance(cls, type)
        and cls in _pytree.SUPPORTED_NODES
        and cls not in (tuple, list, dict, OrderedDict)
        and not _is_namedtuple_type(cls)
    )


def _check_resolvable(cls: type, where: str) -> str:
    path = _type_path(cls)
    try:
        found = _lookup(path)
    except (LookupError, ImportError):
        found = None
    if found is not cls:
        raise TypeError(
            f"tree{where}: type {path} cannot be found again by its import path "
            "(define it at module level so load can rebuild it)"
        )
    return path


_PLAIN = (bool, int, float, str, type(None))


class _Encoder:
    def __init__(self):
        self.tensors: list[torch.Tensor] = []

    def tensor(self, t: torch.Tensor, where: str) -> dict:
        if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
            raise TypeError(
                f"tree{where}: expected a dense (strided) tensor with data, got layout {t.layout} "
                f"on device {t.device}"
            )
        data = t.detach()
        if type(data) is not torch.Tensor:
            data = data.as_subclass(torch.Tensor)
        data = data.resolve_conj().resolve_neg()
        # torch.save writes a view's whole storage; copy small views of big buffers
        if data.untyped_storage().nbytes() > data.numel() * data.element_size():
            data = data.clone()
        self.tensors.append(data)
        node = {"k": "T", "i": len(self.tensors) - 1}
        if t.requires_grad:
            node["g"] = True
        return node

    def __call__(self, x, where: str = "", key: bool = False):
        if isinstance(x, _PLAIN):
            if type(x) in _PLAIN:
                return x
            # subclasses (np.float64, IntEnum) would be pickled by class and refused on load
            for base in (bool, int, float, str):
                if isinstance(x, base):
                    return base(x)
        if isinstance(x, np.generic) and isinstance(x.item(), _PLAIN):
            return self(x.item(), where, key)
        if isinstance(x, torch.Tensor):
            if key:
                raise TypeError(f"tree{where}: dict keys cannot be tensors")
            return self.tensor(x, where)
        if isinstance(x, torch.dtype):
            return {"k": "dtype", "v": str(x).removeprefix("torch.")}
        if isinstance(x, torch.device):
            return {"k": "device", "v": str(x)}
        cls = type(x)
        if cls is torch.Size:  # torch's own pytree rebuilds a Size as a plain tuple
            return {"k": "size", "items": [int(d) for d in x]}
        if _is_namedtuple_type(cls):
            path = _check_resolvable(cls, where)
            return {
                "k": "namedtuple",
                "type": path,
                "fields": list(cls._fields),
                "items": [self(v, f"{where}.{f}", key) for f, v in zip(cls._fields, x)],
            }
        if cls is tuple:
            return {"k": "tuple", "items": [self(v, f"{where}[{i}]", key) for i, v in enumerate(x)]}
        if key:
            raise TypeError(
                f"tree{where}: dict keys must be str/int/float/bool/None or tuples of them, got {cls.__name__}"
            )
        if cls is list:
            return {"k": "list", "items": [self(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if cls in (dict, OrderedDict):
            keys = list(x.keys())
            return {
                "k": "dict" if cls is dict else "odict",
                "keys": [self(k, f"{where} key {k!r}", key=True) for k in keys],
                "values": [self(x[k], f"{where}[{k!r}]") for k in keys],
            }
        if _registered_node(cls):
            path = _check_resolvable(cls, where)
            children, context = _pytree.SUPPORTED_NODES[cls].flatten_fn(x)
            try:
                ctx = self(context, f"{where} (pytree context of {cls.__name__})")
            except TypeError as e:
                raise TypeError(
                    f"tree{where}: {cls.__name__}'s pytree context cannot be stored as plain data ({e})"
                ) from None
            return {
                "k": "node",
                "type": path,
                "context": ctx,
                "children": [self(c, f"{where}.<{cls.__name__} child {i}>") for i, c in enumerate(children)],
            }
        hint = ""
        if dataclasses.is_dataclass(x):
            hint = " (register the dataclass with funrl.tree.register_dataclass)"
        raise TypeError(
            f"tree{where}: cannot checkpoint a {cls.__module__}.{cls.__qualname__}{hint}; leaves must be "
            "tensors, bool/int/float/str/None, torch.dtype, torch.device or torch.Size"
        )


class _Malformed(Exception):
    pass


class _Decoder:
    def __init__(self, tensors: list):
        self.tensors = tensors

    def __call__(self, node):
        if isinstance(node, _PLAIN):
            return node
        if not isinstance(node, dict) or "k" not in node:
            raise _Malformed(f"unexpected {type(node).__name__} in the structure description")
        k = node["k"]
        try:
            if k == "T":
                i = node["i"]
                if not isinstance(i, int) or not 0 <= i < len(self.tensors):
                    raise _Malformed(f"tensor index {i!r} out of range")
                t = self.tensors[i]
                return t.requires_grad_(True) if node.get("g", False) and t.is_floating_point() else t
            if k in ("tuple", "list"):
                items = [self(v) for v in self._list(node["items"])]
                return tuple(items) if k == "tuple" else items
            if k in ("dict", "odict"):
                keys = [self(v) for v in self._list(node["keys"])]
                values = [self(v) for v in self._list(node["values"])]
                if len(keys) != len(values):
                    raise _Malformed("dict with different numbers of keys and values")
                return (dict if k == "dict" else OrderedDict)(zip(keys, values))
            if k == "size":
                items = self._list(node["items"])
                if not all(isinstance(d, int) and not isinstance(d, bool) for d in items):
                    raise _Malformed("torch.Size with non-int entries")
                return torch.Size(items)
            if k == "dtype":
                dt = getattr(torch, str(node["v"]), None)
                if not isinstance(dt, torch.dtype):
                    raise _Malformed(f"unknown dtype {node['v']!r}")
                return dt
            if k == "device":
                return torch.device(str(node["v"]))
            if k == "namedtuple":
                cls = self._type(node["type"])
                if not _is_namedtuple_type(cls):
                    raise _Malformed(f"{node['type']} is not a NamedTuple class")
                if list(cls._fields) != list(node["fields"]):
                    raise _Malformed(
                        f"{node['type']} now has fields {list(cls._fields)}, the file has {node['fields']}"
                    )
                return cls(*[self(v) for v in self._list(node["items"])])
            if k == "node":
                cls = self._type(node["type"])
                if not _registered_node(cls):
                    raise _Malformed(f"{node['type']} is not a registered pytree node type")
                children = [self(v) for v in self._list(node["children"])]
                return _pytree.SUPPORTED_NODES[cls].unflatten_fn(children, self(node["context"]))
        except KeyError as e:
            raise _Malformed(f"{k!r} node without field {e}") from None
        raise _Malformed(f"unknown node kind {k!r}")

    @staticmethod
    def _list(x) -> list:
        if not isinstance(x, list):
            raise _Malformed(f"expected a list in the structure description, got {type(x).__name__}")
        return x

    @staticmethod
    def _type(path):
        if not isinstance(path, str):
            raise _Malformed(f"type path {path!r} is not a string")
        try:
            return _lookup(path)
        except (LookupError, ImportError) as e:
            raise _Malformed(str(e)) from None


def _digest(tree_enc, meta_enc, tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    # repr of plain containers is deterministic (insertion order, shortest float repr)
    h.update(repr((VERSION, tree_enc, meta_enc)).encode())
    for t in tensors:
        c = t.detach()
        if c.device.type != "cpu":
            c = c.cpu()
        c = c.contiguous().reshape(-1)
        h.update(f"|{c.dtype}|{tuple(t.shape)}|".encode())
        if c.numel():
            h.update(memoryview(c.view(torch.uint8).numpy()))
    return h.hexdigest()


# ------------------------------------------------------------------ save / load
def save(path, tree: Any, metadata: Any = None) -> str:
    """Atomically write ``tree`` (and ``metadata``) to ``path``.

    Args:
      path: destination file (parent directories are created).
      tree: a pytree of tensors: nested dict / OrderedDict / list / tuple /
        NamedTuple / registered pytree nodes (funrl dataclasses), with leaves
        that are tensors (dense; any dtype and device), bool/int/float/str/None,
        ``torch.dtype``, ``torch.device`` or ``torch.Size``; numpy scalars and
        subclasses of the Python scalars (IntEnum, ...) are stored as the plain
        Python value.  Dict keys: str/int/float/bool/None or tuples of them.  ``requires_grad`` is kept; tensor subclasses
        (``nn.Parameter``) are stored as plain tensors.
      metadata: optional tree of the same kinds (e.g. a config dict, the step).

    Returns:
      ``path`` as a string.

    Raises:
      TypeError: a leaf or node that cannot be stored safely (the message gives
        its position in the tree), e.g. an unregistered dataclass or a
        NamedTuple defined inside a function.
    """
    enc = _Encoder()
    tree_enc = enc(tree, "")
    meta_enc = enc(metadata, " (metadata)")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "tree": tree_enc,
        "metadata": meta_enc,
        "tensors": enc.tensors,
        "sha256": _digest(tree_enc, meta_enc, enc.tensors),
    }
    return _atomic_write(path, lambda f: torch.save(payload, f))


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


def load(path, map_location=None) -> tuple[Any, Any]:
    """Read a checkpoint written by :func:`save`.

    Uses ``torch.load(weights_only=True)``: a file holding any pickled object
    other than plain containers and tensors is refused, never executed.

    Args:
      path: the file.
      map_location: passed to ``torch.load`` (e.g. ``"cpu"`` to load a CUDA
        checkpoint on a CPU machine).

    Returns:
      ``(tree, metadata)``, rebuilt with the original container types.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      CheckpointError: the file is truncated, corrupt (checksum mismatch), not
        a funrl checkpoint, from a newer format version, contains a pickled
        object, or names a type that cannot be rebuilt safely; the message
        names the file and the problem.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: checkpoint file {path!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure mode becomes one clear error
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path}: refused by the weights_only unpickler: the file holds a pickled object other "
                f"than tensors and plain containers (load never unpickles those), or it is corrupt "
                f"({_first_line(e)})"
            ) from None
        raise CheckpointError(
            f"{path}: cannot be read (truncated, corrupt or not a checkpoint): {_first_line(e)}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a funrl checkpoint (missing format tag {FORMAT!r})")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{path}: bad format version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: format version {version} is newer than this funrl reads ({VERSION}); upgrade funrl"
        )
    tensors = payload.get("tensors")
    if not isinstance(tensors, list) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise CheckpointError(f"{path}: malformed payload: 'tensors' is not a list of tensors")
    if "tree" not in payload or "metadata" not in payload or not isinstance(payload.get("sha256"), str):
        raise CheckpointError(f"{path}: malformed payload: missing 'tree', 'metadata' or 'sha256'")
    if _digest(payload["tree"], payload["metadata"], tensors) != payload["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt")
    decode = _Decoder(tensors)
    try:
        return decode(payload["tree"]), decode(payload["metadata"])
    except _Malformed as e:
        raise CheckpointError(f"{path}: cannot rebuild the tree: {e}") from None
    except Exception as e:  # noqa: BLE001 - a type's constructor rejected the stored values
        raise CheckpointError(f"{path}: cannot rebuild the tree: {_first_line(e)}") from None


# ------------------------------------------------------- rolling checkpoints
class CheckpointManager:
    """The last ``keep`` checkpoints of a run in one directory.

    Files are named ``{prefix}_{step:012d}.pt``.  :meth:`save` writes the new
    file atomically *before* deleting older ones, so a crash at any point
    leaves at least one complete checkpoint.  :meth:`load` tries the newest
    and falls back to older ones, warning (:class:`CheckpointWarning`) about
    each unusable file.

    Retention counts only checkpoints that load and pass their checksum (each
    file is verified once per manager, files it wrote itself are trusted): an
    unusable file (corrupt, truncated, foreign, refused by the safe loader) never
    pushes a good checkpoint out; it is deleted when it is older than the one
    just saved and otherwise left alone (and skipped by :meth:`load`).  Other
    files in the directory are never touched, except the ``.{prefix}_<step>.pt.*.tmp``
    files an interrupted atomic write left, which :meth:`clean_temp` (called by
    :meth:`save`) removes.

    Args:
      directory: where checkpoints live (created on first save).
      keep: how many checkpoints to keep (int >= 1).
      prefix: file name prefix (letters, digits, ``-``, ``_``).
    """

    def __init__(self, directory, keep: int = 2, prefix: str = "ckpt"):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory: expected a str or os.PathLike, got {type(directory).__name__}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep: expected an int >= 1, got {keep!r}")
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
            raise ValueError(f"prefix: expected letters, digits, '-' or '_', got {prefix!r}")
        self.directory = os.fspath(directory)
        self.keep = keep
        self.prefix = prefix
        self._pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.pt$")
        self._temp_pattern = re.compile(rf"^\.{re.escape(prefix)}_\d+\.pt\..+\.tmp$")
        self._good: dict[int, tuple] = {}  # step -> identity of the file known to load and verify

    def path(self, step: int) -> str:
        """The file name used for ``step``."""
        return os.path.join(self.directory, f"{self.prefix}_{self._step(step):012d}.pt")

    @staticmethod
    def _step(step) -> int:
        if isinstance(step, torch.Tensor) and step.ndim == 0 and not step.is_floating_point():
            step = int(step)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step!r}")
        return step

    def steps(self) -> list[int]:
        """Steps of the checkpoint files present, ascending (no validity check)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(self._pattern.match, names) if m)

    def latest_step(self) -> int | None:
        """The newest step on disk, or ``None`` if there is none."""
        s = self.steps()
        return s[-1] if s else None

    @staticmethod
    def _identity(path: str):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _usable(self, step: int) -> bool:
        """Whether checkpoint ``step`` loads and verifies (each file is read at most once)."""
        path = self.path(step)
        ident = self._identity(path)
        if ident is None:
            return False
        if self._good.get(step) == ident:
            return True
        try:
            load(path, map_location="cpu")
        except (CheckpointError, FileNotFoundError):
            return False
        self._good[step] = ident
        return True

    def clean_temp(self) -> list[str]:
        """Delete the temp files (``.{prefix}_<step>.pt.*.tmp``) an interrupted atomic write left.

        Returns:
          The paths deleted.
        """
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        removed = []
        for name in names:
            if self._temp_pattern.match(name):
                path = os.path.join(self.directory, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(path)
        return removed

    def save(self, step: int, tree: Any, metadata: Any = None) -> str:
        """Write checkpoint ``step`` atomically, then keep the newest ``keep`` good checkpoints.

        The file just written is always kept (even if older steps exist on disk
        with larger numbers) and counts as one of the ``keep``; the others are
        the newest other files that load and verify.  Unusable files older than
        ``step`` are deleted, newer ones left alone; they never count.

        Returns:
          The path written.
        """
        step = self._step(step)
        self.clean_temp()
        path = save(self.path(step), tree, metadata)
        self._good[step] = self._identity(path)
        kept = 1
        for s in reversed(self.steps()):
            if s == step:
                continue
            if self._usable(s):
                if kept < self.keep:
                    kept += 1
                    continue
            elif s > step:
                continue
            self._good.pop(s, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(s))
        _fsync_dir(self.directory)
        return path

    def load(self, step: int | None = None, map_location=None) -> tuple[int, Any, Any]:
        """Load checkpoint ``step``, or the newest usable one if ``step`` is None.

        Returns:
          ``(step, tree, metadata)``.

        Raises:
          CheckpointError: ``step`` given and unusable, or no usable checkpoint
            (the message lists every file tried and why it failed).
        """
        if step is not None:
            step = self._step(step)
            path = self.path(step)
            try:
                tree, meta = load(path, map_location)
            except FileNotFoundError:
                raise CheckpointError(f"{path}: no checkpoint for step {step}") from None
            return step, tree, meta
        failures = []
        for s in reversed(self.steps()):
            path = self.path(s)
            ident = self._identity(path)
            try:
                tree, meta = load(path, map_location)
            except (CheckpointError, FileNotFoundError) as e:
                failures.append(str(e))
                warnings.warn(f"skipping unusable checkpoint {path}: {e}", CheckpointWarning, stacklevel=2)
                continue
            if ident is not None and ident == self._identity(path):
                self._good[s] = ident
            return s, tree, meta
        if not failures:
            raise CheckpointError(f"{self.directory}: no checkpoints named {self.prefix}_<step>.pt found")
        raise CheckpointError(
            f"{self.directory}: no usable checkpoint; tried newest first: " + "; ".join(failures)
        )


def save_latest(directory, step: int, tree: Any, metadata: Any = None, keep: int = 2) -> str:
    """``CheckpointManager(directory, keep).save(step, tree, metadata)``; returns the path."""
    return CheckpointManager(directory, keep=keep).save(step, tree, metadata)


def load_latest(directory, map_location=None) -> tuple[int, Any, Any]:
    """``CheckpointManager(directory).load()``: ``(step, tree, metadata)`` of the newest usable checkpoint."""
    return CheckpointManager(directory).load(map_location=map_location)
