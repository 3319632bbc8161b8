"""The one error family of gsasr: the library raises it, the CLI reports it."""

from __future__ import annotations


class GsasrError(Exception):
    """A problem the user can act on; its message is one line naming the file and the problem."""


class InvalidRequest(GsasrError, ValueError):
    """A request that cannot be met as asked, whatever the input: an impossible size or
    option, or one this machine cannot run (fp16 without CUDA). The CLI exits 2 for it."""


class UsageProblem(InvalidRequest):
    """The command line asks for something impossible (exit code 2, not 1)."""


class OutputClosed(Exception):
    """Whoever read standard output went away (`| head -1`): stop quietly, as `cat` does.

    Not a GsasrError: it ends the whole run, not one file."""
