"""What every command shares: statelite errors become one clear line and an exit code, never a traceback."""

from __future__ import annotations

import click

from ..errors import CheckFailed, StateliteError


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

