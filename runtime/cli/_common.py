"""What every command shares: statelite errors become one clear line and an exit code, never a traceback; the
workstation commands keep TensorFlow's log lines off the terminal (``quiet_tensorflow``)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import sys

import click

from ..errors import CheckFailed, StateliteError
from ..quiet import filtered_stderr, quiet_environment


class CheckFailedExit(click.ClickException):
    exit_code = 1


class BadInputExit(click.ClickException):
    exit_code = 2


class StateliteGroup(click.Group):
    """A click group that maps library errors to exit codes: 2 for bad input, 1 for a failed check."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CheckFailed as exc:
            raise CheckFailedExit(str(exc)) from None
        except StateliteError as exc:
            raise BadInputExit(str(exc)) from None
        except ImportError as exc:
            # A workstation command on a device install: statelite.train/convert say which pip line fixes it.
            if "pip install" not in str(exc):
                raise
            raise BadInputExit(str(exc)) from None



def quiet_tensorflow() -> None:
    """Keep TensorFlow's log lines off the terminal for the rest of a workstation command.

    Call it first thing in the command, before anything imports TensorFlow. It sets TensorFlow's logging
    environment (``statelite.quiet.TENSORFLOW_ENV``, where the user has not set it), lowers the Python
    ``tensorflow`` and ``absl`` loggers to errors, and makes the first ``import tensorflow``, wherever it happens,
    run inside ``statelite.quiet.filtered_stderr`` (the C++ start-up lines go straight to fd 2). It does not import
    TensorFlow itself, so a bad option still fails before TensorFlow loads. Calling it again does nothing more.
    """
    quiet_environment()
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport("tensorflow"))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds one top-level module through the other finders and runs its body inside ``filtered_stderr``, once.

    A bare ``importlib.util.find_spec`` (``statelite.train`` checks that TensorFlow is installed that way) also
    lands here; only the import that executes the module removes this finder.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._finding = False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self._finding:
            return None
        self._finding = True  # the lookup below walks sys.meta_path again, through this finder too
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader  # a fresh loader object for each lookup, so patching it touches nothing else
        exec_module = loader.exec_module

        def quiet_exec(module):
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self)
            try:
                with filtered_stderr():
                    exec_module(module)
            finally:
                with contextlib.suppress(AttributeError):
                    del loader.exec_module  # back to the class's own method

        loader.exec_module = quiet_exec
        return spec
