"""Errors a user can fix. Stages print them as one line and exit non-zero."""

import re
import reprlib


class PipelineError(Exception):
    """Base class: the message names the problem and how to fix it."""


class ConfigError(PipelineError):
    """params.yaml has an unknown key, a wrong type or an impossible value."""


class DataError(PipelineError):
    """A data source or data artifact is missing, corrupt or laid out wrongly."""


class TrainingError(PipelineError):
    """Training cannot go on, e.g. the loss became non-finite."""


class OutputError(PipelineError):
    """An output cannot be written whole: the disk is full, or a value has no form in the file's format."""


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to `limit` characters, to quote in a one-line error."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Messages show a bad value cut short, so a huge list or string still makes one short line.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 2, 60, 60


def short_repr(value: object) -> str:
    """A value's repr, cut short, to quote in a one-line error."""
    return _SHORT_REPR.repr(value)


# Control characters (newlines, terminal escapes) and Unicode line separators, which a file or
# folder name may hold: printed raw they would split the one-line error or restyle the terminal.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """Text with every control character written as its escape (a newline as \\n), to print as one line."""
    return _UNPRINTABLE.sub(lambda match: repr(match.group())[1:-1], text)
