"""Exceptions that the command line turns into exit codes.

Every error a user can fix (a bad file, a bad flag, a missing input) is an :class:`InputError` or a
:class:`UsageError`: the CLI prints one line per problem on stderr and exits with code 2. Anything else is a
bug and exits with code 1.
"""
from __future__ import annotations

import os
from collections.abc import Iterable


class AmosError(Exception):
    """Base class of the errors the CLI reports without a traceback."""

    exit_code = 1


class UsageError(AmosError):
    """Bad flags or a bad combination of them (exit code 2)."""

    exit_code = 2


class InputError(AmosError):
    """A file or folder the user gave is unusable (exit code 2).

    Args:
        path: the file or folder at fault; named first in the message.
        problem: what is wrong with it, as a short phrase.
    """

    exit_code = 2

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # keep the two fields when a worker process sends the error back
        return (type(self), (self.path, self.problem))


class InputErrors(AmosError):
    """Several input problems found at once (a dataset check); one line each."""

    exit_code = 2

    def __init__(self, problems: Iterable[InputError]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):
        return (type(self), (self.problems,))


class OutputError(AmosError):
    """An output could not be written (disk full, read-only folder, file size limit): one line, exit code 1.

    Args:
        path: the file or folder that could not be written.
        problem: what went wrong, as a short phrase.
    """

    exit_code = 1

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))
