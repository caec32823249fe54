"""What DVC ignores in the repository, read as DVC 3 reads .dvcignore files (dvc/ignore.py and
dvc/pathspec_math.py), so that a stage run on its own writes no output that DVC then refuses
("is ignored by .dvcignore") in every later command.

DVC's reading, in short: its own patterns first, then each folder's .dvcignore from the top
down, every line stripped and each rewritten to hold from the top folder (a sub-folder's
`*.csv` becomes `plots/**/*.csv`); a .dvcignore that an earlier pattern ignores is not read. A
path is ignored where the last pattern matching it says so, or where one of its folders is
ignored: DVC walks into no ignored folder, whatever a later `!` pattern takes back. Patterns
become regular expressions as pathspec makes them for git's rules, as DVC's do.
"""

if not __package__:  # `python stages/dvcignore.py`: not a stage, and cifar/ is off sys.path
    raise SystemExit(
        "error: run a stage from the repository root as `python -m stages.NAME`, NAME one of download, lr_find, "
        "train, evaluate, figures, explain"
    )

import functools
import io
import os
import posixpath
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import pathspec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from cifar.errors import ConfigError, short_repr, unreadable
from cifar.reading import read_artifact

# What DVC ignores before any .dvcignore.
_DVC_OWN_PATTERNS = (".hg/", ".git/", ".git", ".dvc/")
# This repository's .dvcignore takes 200 bytes; a user's of 72 KB is valid to DVC. The
# patterns become one regular expression, as DVC makes them: 1 MiB of `*?*?...Z` lines took
# 470 MB to compile.
MAX_DVCIGNORE_BYTES = 256 << 10
# Rewritten to hold from the top folder, a sub-folder's patterns each gain its path: 256 KiB of
# one-letter lines 14 folders of 250 characters down took 1.8 GB.
MAX_REWRITTEN_CHARS = 512 << 10
# A pattern's regular expression can take time that grows as a power of a name's length
# (`*?*?*?*?*?*?Z` against a long file name): 20 KiB of them took 46 s of CPU to match, and
# DVC's own commands would take as long.
MAX_CPU_SECONDS = 10


class _Rules(NamedTuple):
    """Consecutive patterns of one kind, matched as one expression, as DVC matches them."""

    expression: re.Pattern[str]
    ignores: bool  # False for `!` patterns, which take paths back
    folders_only: bool  # patterns ending in '/'
    source: str  # the .dvcignore they come from ("" for DVC's own)


def ignoring_files(repo: Path, outputs: dict[str, str], contents: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """For each output (name: path relative to `repo`) that DVC ignores, the .dvcignore that has
    it do so. A folder output is one that `contents` names files of, those its next run
    writes: it is checked as a folder, with those files."""
    # DVC reads the .dvcignore files from its repository's root down, which may lie above the
    # project's folder (DVC's monorepo layout): one there was passed over.
    root = _dvc_root(repo)
    below = PurePosixPath(*repo.relative_to(root).parts)
    with _cpu_time_limit(repo):
        verdicts = {name: _ignoring_file(root, str(below / path), contents.get(name)) for name, path in outputs.items()}
    # Named from the project's folder, as the stages name every path; "" for DVC's own patterns.
    return {name: by and os.path.relpath(root / by, repo) for name, by in verdicts.items() if by is not None}


def _dvc_root(repo: Path) -> Path:
    """The folder DVC takes for the repository's root: the nearest one holding `.dvc`, from
    `repo` up to the file system's edge."""
    for folder in (repo, *repo.parents):
        if (folder / ".dvc").is_dir():
            return folder
        if os.path.ismount(folder):
            break
    return repo


def _ignoring_file(repo: Path, path: str, contents: tuple[str, ...] | None) -> str | None:
    parts = PurePosixPath(path).parts
    is_folder = contents is not None
    rules = _rules_of(None, "")
    # Every folder on the way, not the output's own: a run replaces it, with the .dvcignore
    # or .dvc it holds (a `!*.npz` there took back a top `*.npz` only until download ran).
    for depth in range(len(parts)):
        folder = "/".join(parts[:depth])
        ignored_by = _ignored_by(rules, folder, is_folder=True) if folder else None
        if ignored_by is not None:
            return ignored_by
        # A repository of its own, which DVC leaves out: a file named .dvc makes one too.
        if folder and os.path.lexists(repo / folder / ".dvc"):
            return f"{folder}/.dvc"
        ignore_file = f"{folder}/.dvcignore" if folder else ".dvcignore"
        if (repo / ignore_file).exists() and _ignored_by(rules, ignore_file, is_folder=False) is None:
            rules = rules + _rules_of(repo, ignore_file)
    # What the next run writes, not what the folder holds: the stage replaces it whole, so
    # neither Finder's .DS_Store nor a grid of a layer no longer explained (ignored as a user
    # asked) is in the output DVC caches.
    candidates = [(path, is_folder), *((f"{path}/{name}", False) for name in contents or ())]
    return next((by for by in (_ignored_by(rules, *candidate) for candidate in candidates) if by is not None), None)


@functools.cache
def _rules_of(repo: Path | None, ignore_file: str) -> tuple[_Rules, ...]:
    """A .dvcignore's patterns (DVC's own for None), read and compiled once per stage."""
    folder = posixpath.dirname(ignore_file)  # "" for the top folder's
    lines = enumerate(_DVC_OWN_PATTERNS, 1) if repo is None else _lines_of(repo, ignore_file)
    translated = []
    rewritten_chars = 0
    for number, line in lines:
        pattern = _from_the_top(line, folder) if folder else line
        rewritten_chars += len(pattern)
        if rewritten_chars > MAX_REWRITTEN_CHARS:
            raise ConfigError(
                f"{ignore_file}: its patterns take more than {MAX_REWRITTEN_CHARS >> 10} KiB once DVC rewrites them to "
                f"hold from the top folder (each gains the path of {folder or 'its folder'}); use fewer or move them up"
            )
        try:
            regex, ignores = GitIgnoreSpecPattern.pattern_to_regex(pattern)
        except pathspec.patterns.gitignore.GitIgnorePatternError as error:  # `dvc status` fails on it too
            why = str(error.__cause__ or error).partition(": ")[0].rstrip(".")
            raise _unreadable_line(ignore_file, number, line, why) from None
        if regex is not None and ignores is not None:  # None: a pattern git discards (`a[b`)
            # Named groups would clash once joined into one expression.
            translated.append((re.sub(r"\(\?P<[^>]*>", "(?:", regex), ignores, pattern.endswith("/"), number, line))
    rules = []
    for (ignores, folders_only), group in groupby(translated, key=lambda entry: entry[1:3]):
        regexes = list(group)
        try:
            expression = re.compile("|".join(f"(?:{regex})" for regex, *_ in regexes))
        except re.error:  # a range backwards, `[z-a]`, which DVC's expression fails on too
            for regex, _, _, number, line in regexes:
                try:
                    re.compile(regex)
                except re.error as error:
                    raise _unreadable_line(ignore_file, number, line, error.msg) from None
            raise
        rules.append(_Rules(expression, ignores, folders_only, ignore_file))
    return tuple(rules)


def _unreadable_line(ignore_file: str, number: int, line: str, why: str) -> ConfigError:
    return ConfigError(
        f"{ignore_file}: line {number}, {short_repr(line)}, is not a pattern DVC can read ({why}); "
        f"fix or remove that line"
    )


def _lines_of(repo: Path, ignore_file: str) -> list[tuple[int, str]]:
    """A .dvcignore's patterns, numbered by line as DVC numbers them."""
    # Not "restore it with git checkout": an untracked one is the user's, which git cannot restore.
    fix = "make it a text file of patterns, or remove it"
    try:
        text = read_artifact(repo / ignore_file, MAX_DVCIGNORE_BYTES, fix)
    except OSError as error:  # a socket or another user's file of mode 600: open() fails
        raise unreadable(repo / ignore_file, error, fix) from None
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{ignore_file}: not UTF-8 text (byte {error.start}), which DVC cannot read either; save it as UTF-8"
        ) from None
    # Text lines (at \n, \r or \r\n only), stripped, comments left out.
    lines = enumerate((line.strip() for line in io.StringIO(decoded, newline=None)), 1)
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _from_the_top(pattern: str, folder: str) -> str:
    """A pattern of `folder`'s .dvcignore, rewritten to hold from the top folder as DVC rewrites
    it: one with a '/' before its end is anchored to the folder, any other matches at every
    depth below it, and one leading '\\' is dropped (`\\*.csv` then matches every CSV file)."""
    negated = pattern.startswith("!")
    pattern = pattern.removeprefix("!")
    anchored = "/" in pattern[:-1] and not pattern.startswith("**/")
    pattern = (pattern.removeprefix("/") if anchored else pattern.removeprefix("**/")).removeprefix("\\")
    rewritten = f"{folder}/{pattern}" if anchored else f"{folder}/**/{pattern}"
    return f"!/{rewritten}" if negated else rewritten


def _ignored_by(rules: tuple[_Rules, ...], path: str, is_folder: bool) -> str | None:
    """The .dvcignore whose pattern has DVC ignore `path` or a folder on its way, if one does."""
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        deciding = _last_matching(rules, "/".join(parts[:depth]), is_folder or depth < len(parts))
        if deciding is not None:
            return deciding
    return None


def _last_matching(rules: tuple[_Rules, ...], path: str, is_folder: bool) -> str | None:
    """The .dvcignore of the last pattern matching `path` ("" for DVC's own) if it ignores it
    (not a `!` one)."""
    forms = [path, f"{path}/"] if is_folder else [path]
    for group in reversed(rules):
        if (is_folder or not group.folders_only) and any(map(group.expression.match, forms)):
            return group.source if group.ignores else None
    return None


@contextmanager
def _cpu_time_limit(repo: Path) -> Iterator[None]:
    """At most MAX_CPU_SECONDS of the process's CPU time, then one line."""

    def out_of_time(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGVTALRM, out_of_time)
    # A launcher may start the stage with the signal blocked, and the limit then never came.
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGVTALRM})
    signal.setitimer(signal.ITIMER_VIRTUAL, MAX_CPU_SECONDS)
    try:
        yield
    except TimeoutError:
        raise ConfigError(
            f"the .dvcignore files in {repo} took more than {MAX_CPU_SECONDS} s of CPU to read and match against the "
            f"paths table's outputs, as they would in every DVC command; use fewer of them or fewer patterns (one of "
            f"many `*` and `?` can take time that grows as a power of a name's length)"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGVTALRM, previous)
