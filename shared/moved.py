"""Old import paths kept working: when a module moved, its old dotted name loads the new module.

Researchers' code imports the names the README listed before the layout was redrawn (for example
``from part1_vae.models import MLPEncoder``). A part's ``__init__`` registers its moved modules here;
nothing is imported until the old name is, so the aliases cost nothing otherwise.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self):
        self.moved: dict[str, str] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.moved:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(self.moved[spec.name])  # the new module itself, under its old name too

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


_FINDER = _MovedModuleFinder()
sys.meta_path.append(_FINDER)


def register_moved(moved: dict[str, str]) -> None:
    """``{"old.dotted.name": "new.dotted.name"}``: importing the old name gives the new module."""
    _FINDER.moved.update(moved)
