"""How both command lines fail: `Failure`, one line on stderr (printed by `charrnn.cli.run`) and
its exit code, never a traceback. `charrnn` and `orchestrator` raise it, or a subclass of it, at
their edge; the orchestrator may import this module, never the reverse.

Kept apart from `charrnn.errors` (the library's errors) so that the library imports no click.
"""

from __future__ import annotations

import click

EXIT_USAGE = 2  # bad input: options, corpus, checkpoint, prime (click's own usage errors too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class Failure(click.ClickException):
    """One line on stderr and its exit code (EXIT_USAGE unless given)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code

    # click declares exit_code once per class (a ClassVar); a Failure carries its own, read on exit
    # (a property with a setter, as click's attribute is writeable: no type: ignore needed)
    @property
    def exit_code(self) -> int:
        return self.code

    @exit_code.setter
    def exit_code(self, code: int) -> None:
        self.code = code
