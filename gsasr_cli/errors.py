"""The one error family of gsasr: the library raises it, the CLI reports it."""

from __future__ import annotations


class GsasrError(Exception):
    """A problem the user can act on; its message is one line naming the file and the problem."""


class UsageProblem(GsasrError):
    """The command line asks for something impossible (exit code 2, not 1)."""
