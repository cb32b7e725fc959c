"""The exception tree: one root, drawn whole in the docstring of ``orchestra.errors``."""

from __future__ import annotations

import importlib

import orchestra.errors
from orchestra.errors import OrchestraError

from .test_layers import MODULES


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_error_of_the_package_is_in_the_drawn_tree() -> None:
    for name in MODULES:
        if name != "orchestra.__main__":
            importlib.import_module(name)
    tree = orchestra.errors.__doc__ or ""
    ours = {cls for cls in _subclasses(OrchestraError) if cls.__module__.startswith("orchestra")}
    missing = sorted(cls.__qualname__ for cls in ours if f"── {cls.__qualname__} " not in tree)
    assert not missing, f"errors not drawn in orchestra/errors.py's docstring: {missing}"
    assert len(ours) >= 13  # 7 of the server (ReloadFailed among them), 6 of the SDK


def test_package_exceptions_come_from_the_root() -> None:
    """Every exception class the package defines for callers derives from OrchestraError."""
    for name in MODULES:
        if name.startswith("orchestra.testing") or name == "orchestra.__main__":
            continue  # the fake engine is a program of its own
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Exception)
                and value.__module__ == name
                and not value.__name__.startswith("_")
            ):
                assert issubclass(value, OrchestraError), f"{name}.{value.__name__}"
