"""Config fields read from an algorithm's source, without importing it (or torch).

``funrl train ALGO --help`` lists every Config field with its default and its
``#:`` comment; importing the algorithm would import torch (seconds), so the
fields are read from the file with :mod:`ast`.  ``tests/test_cli.py`` checks
that what is read here equals the imported dataclass for every algorithm.
"""

from __future__ import annotations

import ast
import importlib.util
from typing import NamedTuple

__all__ = ["SourceField", "config_fields", "hyperparams"]


class SourceField(NamedTuple):
    name: str
    default: str  #: the default as written in the source (e.g. ``"2.5e-4"``, ``"(64, 64)"``)
    comment: str  #: the field's ``#:`` comment ("" if none)


def _parse(module_path: str) -> tuple[ast.Module, list[str]]:
    with open(importlib.util.find_spec(module_path).origin, encoding="utf-8") as f:
        text = f.read()
    return ast.parse(text), text.splitlines()


def _class(tree: ast.Module, name: str) -> ast.ClassDef | None:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _imported_from(tree: ast.Module, name: str) -> str | None:
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.module and any((a.asname or a.name) == name for a in n.names):
            return n.module
    return None


def _fields_of(module_path: str, class_name: str) -> list[SourceField]:
    tree, lines = _parse(module_path)
    cls = _class(tree, class_name)
    if cls is None:
        origin = _imported_from(tree, class_name)
        if origin is None:
            raise LookupError(f"{module_path}: no class {class_name}")
        return _fields_of(origin, class_name)
    fields: list[SourceField] = []
    for base in cls.bases:  # dataclass fields: bases' first, in order
        if isinstance(base, ast.Name):
            fields.extend(_fields_of(module_path, base.id))
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            line = lines[node.end_lineno - 1]
            comment = line.split("#:", 1)[1].strip() if "#:" in line else ""
            default = ast.get_source_segment("\n".join(lines), node.value) or ""
            new = SourceField(node.target.id, default, comment)
            # as in dataclasses: a field redefined in a subclass keeps its base's position
            at = next((i for i, f in enumerate(fields) if f.name == new.name), None)
            if at is None:
                fields.append(new)
            else:
                fields[at] = new
    return fields


def config_fields(module_path: str) -> list[SourceField]:
    """The fields of ``Config`` in ``module_path`` (e.g. ``"funrl.algorithms.ppo"``), bases first, as written."""
    return _fields_of(module_path, "Config")


def hyperparams(module_path: str) -> tuple[str, ...]:
    """The module's ``HYPERPARAMS`` tuple as written (``()`` when it has none)."""
    tree, _ = _parse(module_path)
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HYPERPARAMS" for t in n.targets):
            return tuple(ast.literal_eval(n.value))
    return ()
