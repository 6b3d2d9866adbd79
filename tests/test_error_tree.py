"""The error tree drawn in ``flagstone/errors.py``'s docstring is the whole truth: every
``FlagstoneError`` subclass defined anywhere in the package appears in it, under its
real parent, and nothing in it is made up.

Adding an error class? Draw it in that docstring, under the class it derives from,
with a few words on when it is raised and its exit code; this test names what is
missing or misplaced.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import flagstone
from flagstone import errors
from flagstone.errors import FlagstoneError

# "    │   ├── ConflictError   a conditional write …" -> depth from the name's column.
TREE_LINE = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z][A-Za-z0-9]+)\b")


def drawn_tree() -> dict[str, str | None]:
    """Class name -> parent name, read from the drawing in errors.py's docstring."""
    doc = errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name)
    for line in doc.splitlines():
        match = TREE_LINE.match(line)
        if not match or not line.startswith("    "):
            continue
        column, name = match.start("name"), match.group("name")
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((column, name))
    return parents


def defined_error_classes() -> dict[str, type[FlagstoneError]]:
    """Every FlagstoneError subclass defined in a flagstone module (all modules imported)."""
    for module in pkgutil.walk_packages(flagstone.__path__, "flagstone."):
        if not module.name.endswith(".__main__"):  # entry points run when imported
            importlib.import_module(module.name)
    found: dict[str, type[FlagstoneError]] = {}
    pending: list[type[FlagstoneError]] = [FlagstoneError]
    while pending:
        cls = pending.pop()
        if cls.__module__.startswith("flagstone."):
            assert cls.__name__ not in found, f"two error classes named {cls.__name__}"
            found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_class_is_drawn_under_its_parent() -> None:
    drawn = drawn_tree()
    assert drawn.get("FlagstoneError", "missing") is None, "the tree's root is FlagstoneError"
    classes = defined_error_classes()
    missing = sorted(f"{c.__module__}.{name}" for name, c in classes.items() if name not in drawn)
    assert not missing, f"draw these in the error tree of flagstone/errors.py: {missing}"
    for name, cls in classes.items():
        if cls is FlagstoneError:
            continue
        parent = next(base for base in cls.__mro__[1:] if issubclass(base, FlagstoneError))
        assert drawn[name] == parent.__name__, (
            f"{name} derives from {parent.__name__} but is drawn under {drawn[name]}"
        )
    invented = sorted(set(drawn) - set(classes))
    assert not invented, f"the error tree draws classes that do not exist: {invented}"


def test_the_tree_reader_sees_nesting() -> None:
    # Guards the reader itself: a depth-3 class must come out under its real parent.
    drawn = drawn_tree()
    assert drawn["ConflictError"] == "StoreError"
    assert drawn["BucketNotFoundError"] == "NotFoundError"
    assert drawn["UsageError"] == "FlagstoneError"
