"""Where the stages read and write: the `paths` table at the top of dvc.yaml, the one place
each path is written. dvc.yaml's stage definitions interpolate it (`${paths.model}`) and the
stages read it here, so a stage run on its own writes exactly where DVC expects its outputs,
and a queued experiment's copy reads its own dvc.yaml."""

if not __package__:  # `python stages/paths.py`: not a stage, and cifar/ is off sys.path
    raise SystemExit(
        "error: run a stage from the repository root as `python -m stages.NAME`, NAME one of download, lr_find, "
        "train, evaluate, figures, explain"
    )

import contextlib
import dataclasses
import functools
import itertools
import os
import posixpath
import re
import shlex
import sys
import typing

# Every stage reads its paths here. Without stages/__init__.py, stages is a namespace package
# (or a bare __init__.pyc left beside it): download ran without its start-up checks and
# handlers, or with old ones, and DVC then found a dependency gone.
if not (getattr(sys.modules[__package__], "__file__", None) or "").endswith("__init__.py"):
    sys.stderr.write(
        "error: the stages need stages/__init__.py, which is missing; restore it from git (`git status` lists it as "
        "deleted)\n"
    )
    raise SystemExit(2)
# Emptied, it ran a stage without them too, exit 0. _stage_name is defined there before this
# module is first imported.
if not hasattr(sys.modules[__package__], "_stage_name"):
    sys.stderr.write(
        "error: stages/__init__.py lacks the stages' start-up checks (emptied, or cut short?); restore it from git "
        "(`git diff stages/__init__.py` shows what changed)\n"
    )
    raise SystemExit(2)
from pathlib import Path, PurePosixPath

import yaml

from cifar.atomic import SCRATCH_MARK
from cifar.cli import in_a_dvc_workspace_copy
from cifar.config import DOWNLOAD_CACHE, Params
from cifar.errors import ConfigError, DataError, one_line, short_repr
from cifar.params_file import PARAMS_FILE, Yaml12Loader
from cifar.reading import read_artifact, walk
from stages import dvcignore

# Not resolved: stages/ linked to another checkout's read that checkout's dvc.yaml, and wrote there.
REPO = Path(os.path.abspath(__file__)).parents[1]
PIPELINE = REPO / "dvc.yaml"
PARAMS = PARAMS_FILE
# This pipeline's dvc.yaml takes 11 KB; PyYAML parses up to 35 s of CPU per MiB of dense YAML.
MAX_PIPELINE_BYTES = 256 << 10
# What the stages may walk once anchors, aliases and each foreach's `do:` are written out; a
# 256 KB file holds at most 128 Ki values written out, this pipeline's about 400. 1.3 KB of
# aliases of aliases in a user's foreach grew past 3.7 GB in 300 s as every stage filled `do:`
# in, and 1,000 items of 1,000 outs each (51 KB) kept every stage reading for minutes.
MAX_PIPELINE_VALUES = 1 << 17
# What filling in each foreach item may write: 1,000 aliases of a string of 1,000 `${item}`,
# filled with a 10 KB item, grew past 3 GB (of 10 GB) in 15 s.
MAX_FILLED_BYTES = 4 << 20
# Each write makes a scratch folder `.NAME.partial-PID-XXXXXXXX` beside its output (PIDs have
# up to 7 digits) within the 255 bytes a file name may take: a longer NAME failed after the work.
MAX_OUTPUT_NAME_BYTES = 255 - len(f".{SCRATCH_MARK}1234567-abcdefgh")
# Linux's limit on a path's bytes, its final NUL included.
PATH_MAX = 4096


# Where no output may go: the code, the tests and tools, git's and DVC's own folders, the
# environment. A path needs a folder too: a top-level file would be params.yaml, dvc.yaml, ...
PROTECTED_FOLDERS = {"cifar", "stages", "tests", "bench", "scripts", "docs", ".git", ".dvc", ".ci", ".github", ".venv"}
# What git and DVC read wherever it is in a repository: never an output's name.
GIT_AND_DVC_NAMES = {
    ".git", ".gitignore", ".gitattributes", ".gitmodules", ".dvc", ".dvcignore", "dvc.yaml", "dvc.lock"
}  # fmt: skip


def _refuse(
    problem: str, where: str = f"{PIPELINE.name}'s paths table", fix: str = "fix it, or restore it with"
) -> ConfigError:
    return ConfigError(f"{where}: {problem}; {fix} `git checkout dvc.yaml`")


def _read_pipeline() -> object:
    try:
        # A bounded read, as of every artifact: a named pipe in dvc.yaml's place blocked a stage at open() for good.
        text = read_artifact(PIPELINE, MAX_PIPELINE_BYTES, "restore it with `git checkout dvc.yaml`")
        loader = Yaml12Loader(text.decode("utf-8"))
        try:
            pipeline = loader.get_single_data()
        finally:
            loader.dispose()
    except DataError:  # a folder, a named pipe, a device, or too large: its own line names it
        raise
    except yaml.MarkedYAMLError as error:  # a key written twice, which DVC refuses too
        line = f"line {error.problem_mark.line + 1}: " if error.problem_mark else ""
        raise _refuse(f"{line}{error.problem}", where=PIPELINE.name) from None
    except Exception as error:  # PyYAML's constructors raise KeyError, ValueError, ... on a tagged value
        raise _refuse(f"unreadable ({type(error).__name__}: {one_line(error)})", where=PIPELINE.name) from None
    stages = pipeline.get("stages") if isinstance(pipeline, dict) else None
    if not isinstance(stages, dict):  # `stages:` empty or missing, which DVC accepts, was a traceback
        raise _refuse("no `stages:` mapping of the pipeline's stages", where=PIPELINE.name)
    if _values_written_out(pipeline) > MAX_PIPELINE_VALUES:
        raise _refuse(
            f"written out (the values its anchors' aliases stand for, and each foreach's `do:` for every item), it "
            f"holds more than {MAX_PIPELINE_VALUES:,} values",
            where=PIPELINE.name,
            fix="cut what repeats, or restore it with",
        )
    return pipeline


def _values_written_out(pipeline: dict) -> int:
    """How many values the pipeline holds with its aliases, and each foreach's `do:` for every
    item, written out, counted up to past MAX_PIPELINE_VALUES (PyYAML shares an alias's value,
    so a small file can stand for a huge one)."""
    counted, pending = 0, [(pipeline, 1)]
    while pending and counted <= MAX_PIPELINE_VALUES:
        value, times = pending.pop()
        counted += times
        if isinstance(value, dict) and "foreach" in value and isinstance(value["foreach"], list | dict):
            pending.append((value.get("do"), times * max(len(value["foreach"]), 1)))
            value = {key: each for key, each in value.items() if key != "do"}
        if isinstance(value, dict):
            pending += [(each, times) for each in itertools.chain(value.keys(), value.values())]
        elif isinstance(value, list):
            pending += [(each, times) for each in value]
    return counted


def _read_table(pipeline: object) -> dict[str, str]:
    entries = pipeline.get("vars") if isinstance(pipeline, dict) else None
    entries = entries if isinstance(entries, list) else []
    tables = [entry["paths"] for entry in entries if isinstance(entry, dict) and "paths" in entry]
    if len(tables) > 1:  # DVC merges them; one table is one place to read and edit
        raise _refuse(f"{len(tables)} `vars:` entries hold `paths:`", fix="merge them into one, or restore it with")
    if not tables and any(isinstance(entry, str) for entry in entries):
        raise _refuse(
            "no `vars:` entry holds `paths:`, and the stages read the table from dvc.yaml only, not from a file "
            "`vars:` names",
            fix="write it in dvc.yaml as one `- paths:` entry of `vars:`, or restore it with",
        )
    if len(tables) != 1 or not isinstance(tables[0], dict):
        raise _refuse("no `vars:` entry holds one mapping `paths:` of names to paths")
    # A name YAML reads as a number (`2026: reports/run.txt`, a user's own, which DVC takes) as its text.
    table, protected_places = {str(name): path for name, path in tables[0].items()}, _protected_places()
    protected_folders = _protected_folders()
    for name, path in table.items():
        problem = _path_problem(path) or _format_problem(name, path)
        if problem:
            raise _refuse(f"{name} = {_shown(path)!a} {problem}")
        link_problem = _link_problem(path, protected_places, links_checked=name != "checkpoint")
        if link_problem:
            # The link is the workspace's, and the usual fix; the table may have changed instead.
            problem, link = link_problem
            raise _refuse(
                f"{name} = {path!r} {problem}",
                fix=f"remove the link (`rm {shlex.quote(str(link))}`), or if {PIPELINE.name}'s paths table changed, "
                f"restore it with",
            )
        mounted = _a_protected_folder_among(path, protected_folders)
        if mounted:
            raise _refuse(
                f"{name} = {path!r} is in {mounted[0]}, which is {mounted[1]} reached by another path (a bind mount)",
                fix=f"unmount it (`umount {shlex.quote(str(mounted[0]))}`), or if {PIPELINE.name}'s paths table "
                f"changed, restore it with",
            )
        # A user's file where an output folder goes (notes in `plots/images`), or a table edited
        # to put one under a file: either may have changed, and the line says which fix is which.
        file_in_the_way = next((folder for folder in PurePosixPath(path).parents if (REPO / folder).is_file()), None)
        if file_in_the_way:
            raise ConfigError(
                f"{file_in_the_way} is a file, where the stages write a folder ({name} = {path!r} lies inside it); "
                f"move the file away, or if {PIPELINE.name}'s paths table is what changed, restore it with "
                f"`git checkout dvc.yaml`"
            )
    # evaluate wrote plots/__pycache__/confusion.csv, and every `dvc status` failed after.
    # The checkpoint is train's scratch, ignored on purpose.
    tracked = {name: path for name, path in table.items() if name != "checkpoint"}
    _refuse_what_dvc_ignores(table, dvcignore.ignoring_files(REPO, tracked, FOLDER_OUTPUTS_HOLD))
    # The download cache is a folder the stages write too (cifar.config.DOWNLOAD_CACHE).
    outputs = [*table.items(), ("cache", DOWNLOAD_CACHE)]
    for (name, path), (other_name, other) in itertools.permutations(outputs, 2):
        if path == other or path.startswith(other + "/"):
            raise _refuse(
                f"{name} = {path!r} is {other_name}'s path or inside it ({other!r}); each output needs its own"
            )
    # Where they lead: a link inside an output's own folder (`plots/images -> .`) passed the
    # link check, and figures wrote its loss PNG over train's plots/history.csv.
    resolved = {name: (REPO / path).parent.resolve() / PurePosixPath(path).name for name, path in outputs}
    for (name, path), (other_name, other) in itertools.combinations(outputs, 2):
        one, another = resolved[name], resolved[other_name]
        if one == another or one.is_relative_to(another) or another.is_relative_to(one):
            raise _refuse(
                f"{name} = {path!r} and {other_name} = {other!r} lead through a symbolic link to one place, or one "
                f"inside the other ({one} and {another}); each output needs its own",
                fix=f"remove the link, or if {PIPELINE.name}'s paths table changed, restore it with",
            )
    return table


def _path_problem(path: object) -> str | None:
    """Why a path's text cannot be an output's, if it cannot."""
    if not isinstance(path, str) or not path.isprintable():  # NUL, a newline, an unpaired surrogate
        return "is not a path of printable text"
    parts = PurePosixPath(path).parts
    if "${" in path:  # DVC refuses the file ("interpolating is not allowed"); the stages wrote a folder `${dirs.out}`
        return "holds `${`, which DVC does not resolve inside `vars:`; write the path out"
    if path.endswith("/"):  # DVC takes the path as written, and the stages as the folder: not the same output
        return "ends in '/'; write it without"
    if path.startswith("/") or ".." in path.split("/") or str(PurePosixPath(path)) != path or "." in parts:
        return "is not a plain relative path inside the repository (no leading /, '..', '.' or '//')"
    if len(parts) < 2 or parts[0] in PROTECTED_FOLDERS:
        return (
            f"is not inside an output folder (a folder of its own, not one of {', '.join(sorted(PROTECTED_FOLDERS))})"
        )
    read_by_git_or_dvc = next((part for part in parts if part in GIT_AND_DVC_NAMES or part.endswith(".dvc")), None)
    if read_by_git_or_dvc:  # evaluate wrote its table over plots/.gitignore, and git listed every output as new
        return f"names {read_by_git_or_dvc!r}, which git or DVC reads (and git may track); pick another name"
    if any(SCRATCH_MARK in part for part in parts):
        return f"names a scratch folder ('{SCRATCH_MARK}'), which each stage run deletes"
    try:
        os.fsencode(path)
    except UnicodeEncodeError:  # a C or POSIX locale without UTF-8 mode: figures failed after drawing
        return (
            f"cannot be a file name in this locale's encoding ({sys.getfilesystemencoding()}); use a UTF-8 locale "
            f"(export LC_ALL=C.UTF-8) or an ASCII path"
        )
    if len(parts[-1].encode()) > MAX_OUTPUT_NAME_BYTES:
        return (
            f"has a file name of {len(parts[-1].encode())} bytes: at most {MAX_OUTPUT_NAME_BYTES} leave room for the "
            f"scratch folder a write makes beside it (`.NAME{SCRATCH_MARK}PID-XXXXXXXX`, 255 bytes in all)"
        )
    too_long = next((part for part in parts if len(part.encode()) > 255), None)
    if too_long:
        return f"has a folder name of {len(too_long.encode())} bytes, more than the 255 a file system takes"
    # 21 folders of 200 bytes ended every stage in a "File name too long" traceback.
    whole = len(os.fsencode(REPO / path)) + 255 - MAX_OUTPUT_NAME_BYTES  # with a scratch name's extra bytes
    if whole >= PATH_MAX:
        return (
            f"is too long: with the repository's folder and a scratch name it takes {whole:,} bytes, more than "
            f"{PATH_MAX - 1:,}; shorten it"
        )
    return None


def _refuse_what_dvc_ignores(table: dict[str, str], ignored: dict[str, str]) -> None:
    for name, where in ignored.items():
        if not where:
            raise _refuse(f"{name} = {table[name]!r} lies in a folder DVC always ignores (.git, .dvc or .hg)")
        if where.endswith("/.dvc"):  # plots/images/.dvc: `dvc data status` listed every Grad-CAM grid as deleted
            raise _refuse(
                f"{name} = {table[name]!r} lies in {where[:-5]}, a DVC repository of its own, which DVC leaves out "
                f"of this one",
                fix=f"remove {where} if it is a stray, or if {PIPELINE.name}'s paths table changed, restore it with",
            )
        raise _refuse(
            f"{name} = {table[name]!r} lies where {where} has DVC ignore it",
            fix=f"change {where}, or if {PIPELINE.name}'s paths table changed, restore it with",
        )


def refuse_files_dvc_would_ignore(name: str, files: tuple[str, ...], chosen_by: str) -> None:
    """Before a stage writes these files into folder output `name`: those its params choose
    (explain's grids per layer) may be ignored where the table's usual ones are not, and DVC
    cached the folder without them, exit 0."""
    where = dvcignore.ignoring_files(REPO, {name: TABLE[name]}, {name: files}).get(name)
    if where is None:
        return
    if not where or where.endswith("/.dvc"):
        _refuse_what_dvc_ignores(TABLE, {name: where})
    raise ConfigError(
        f"{where} has DVC ignore files that {chosen_by.split('.')[0]} would write into {TABLE[name]} for {chosen_by} "
        f"({', '.join(files)[:300]}), and DVC would cache the folder without them; change {where} or {chosen_by}"
    )


# Files each folder output holds once written, checked against .dvcignore before a run writes
# them. Explain's grids are named by explain.layers, and explain checks those as it starts: a
# guess here (layer3's) had every stage refuse where only layer3's were ignored and layer2 explained.
FOLDER_OUTPUTS_HOLD = {"data": ("train.npz", "test.npz", "manifest.json"), "gradcam_images": ()}

# The tables DVC draws as plots, written as CSV.
_PLOT_TABLES = ("lr_find_curve", "history", "lr_schedule", "confusion", "per_class")


def _format_problem(name: str, path: str) -> str | None:
    """Why a file that DVC reads by its suffix (metrics and plots) is named for a format it is
    not written in, if it is: `loss_image: plots/images/loss.svg` held PNG bytes, which DVC's
    plots and any SVG viewer took for a broken file."""
    if name.endswith("_metrics"):
        written_as = ".json"
    elif name.endswith("_image"):
        written_as = ".png"
    elif name in _PLOT_TABLES:
        written_as = ".csv"
    else:
        return None
    suffix = PurePosixPath(path).suffix
    if suffix == written_as:
        return None
    if suffix.lower() == written_as:  # DVC's plots match suffixes case and all: `dvc plots show` left out a .CSV
        return f"ends in {suffix!r}, and DVC reads {name} by its suffix in lower case ({written_as})"
    return f"ends in {suffix!r}, but {name} is written as {written_as[1:].upper()} ({written_as})"


def _link_problem(path: str, protected_places: list[Path], links_checked: bool) -> tuple[str, str] | None:
    """Why a symbolic link among a path's folders keeps it from being an output's, if one
    does, and the first link on the way. (The resume checkpoint's folder may be a link:
    scripts/ci_setup.py links it into a self-hosted runner's lasting state.)"""
    # A link among its folders (`out -> cifar`) leads where the text does not say. (The output
    # itself may be a link: DVC's symlink cache makes them, and readers and writers check it.)
    # The checkpoint's may lead out of the repository, never back into it elsewhere (`ckpt ->
    # cifar/models` with `ckpt/__init__.py` had train overwrite, then delete, the code).
    parts = PurePosixPath(path).parts
    folders = [PurePosixPath(*parts[:depth]) for depth in range(1, len(parts))]
    link = next((folder for folder in folders if (REPO / folder).is_symlink()), None)
    try:
        resolved = (REPO / path).parent.resolve() / parts[-1]
    except RuntimeError:  # Python 3.11's word for a link that loops
        return "leads through a symbolic link that loops", str(link)
    inside = resolved.relative_to(REPO).parts[:1] if resolved.is_relative_to(REPO) else None
    # .venv may itself be a link out of the repository: a path through it is still the code's.
    into_protected = any(resolved.is_relative_to(place) for place in protected_places)
    if into_protected or (inside != parts[:1] and (links_checked or inside is not None)):
        dangling = "" if resolved.parent.is_dir() else f", in {resolved.parent}, which does not exist"
        return f"leads through the symbolic link {link} to {resolved}{dangling}", str(link)
    if inside is None and _a_repository_folder_among(resolved.parent):
        return (
            f"leads through the symbolic link {link} to {resolved}, in a folder of the repository reached by "
            f"another path (a bind mount)",
            str(link),
        )
    return None


def _a_repository_folder_among(folder: Path) -> bool:
    """Whether folder or one above it is a folder of the repository's, by device and inode: a
    link out of the repository to a bind mount of cifar/models led train to overwrite the code,
    each path telling nothing. (Walked only for a link out, as the checkpoint's may be.)"""
    chain = set()
    for place in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            found = place.stat()
            chain.add((found.st_dev, found.st_ino))
    for place, subfolders, _ in walk(REPO):
        try:
            found = os.stat(place)
        except OSError:  # gone since it was listed
            continue
        if (found.st_dev, found.st_ino) in chain:
            return True
        if place == str(REPO):  # git's and DVC's stores, and the environment: no stage's folder
            subfolders[:] = [name for name in subfolders if name not in (".git", ".dvc", ".venv")]
    return False


def _protected_folders() -> dict[tuple[int, int], Path]:
    """The device and inode of each protected folder and of every folder inside one, and the
    folder; git's and DVC's stores and the environment by their top folder alone."""
    folders = {}
    for name in PROTECTED_FOLDERS:
        walked = [(str(REPO / name), [], [])] if name in (".git", ".dvc", ".venv") else walk(REPO / name)
        for folder, _, _ in walked:
            with contextlib.suppress(OSError):  # missing, or gone since it was listed
                found = os.stat(folder)
                folders[(found.st_dev, found.st_ino)] = Path(folder)
    return folders


def _a_protected_folder_among(path: str, protected_folders: dict[tuple[int, int], Path]) -> tuple[str, str] | None:
    """The folder of `path` (or one above it, inside the repository) that is a protected
    folder by device and inode, and that folder, if there is one: `.checkpoints` as a bind
    mount of cifar/models had train write its checkpoint over the code, no link on the way."""
    for folder in PurePosixPath(path).parents:
        if str(folder) == ".":
            return None
        with contextlib.suppress(OSError):
            found = (REPO / folder).stat()
            same = protected_folders.get((found.st_dev, found.st_ino))
            if same is not None:
                return str(folder), str(same.relative_to(REPO))
    return None


def _protected_places() -> list[Path]:
    """Where the protected folders really are; not one that loops, nor one holding the
    repository itself (a .venv that is a link to its parent folder)."""
    places = []
    for folder in PROTECTED_FOLDERS:
        try:
            place = (REPO / folder).resolve()
        except RuntimeError:
            continue
        if not REPO.is_relative_to(place):
            places.append(place)
    return places


def _refuse_what_only_dvc_resolves(stages: dict) -> None:
    """A stage of stages/ whose definition uses what only DVC resolves: `matrix:`, a `foreach` over
    a vars entry, `${...}` beyond the paths table and a foreach's item and key. Read otherwise,
    lr_find recorded no params (or another key's, for `${knobs.sd}`) and train refused its pick,
    naming a stage DVC lacks. The command of a stage a script of the user's runs (`sh run.sh
    lr_find`) is theirs to write."""
    for name, definition in _definitions(stages).items():
        if not _runs_a_stage(definition):
            continue
        cmd = definition.get("cmd")
        read = _strings_within(_read_of(definition))
        unresolved = [found[0] for text in read for found in _REFERENCE.finditer(text) if not _table_name(found[0])]
        if "matrix" in definition or unresolved:
            what = "`matrix:`" if "matrix" in definition else f"`{unresolved[0]}`"
            raise _refuse(
                f"stage {name!r} runs {cmd!r} with {what}, which only DVC resolves, while the stages read what it "
                f"declares (params, outs) from dvc.yaml as written",
                where=PIPELINE.name,
                fix="write its definition out, naming paths by the paths table (`${paths.NAME}`), or restore it with",
            )
        # DVC ran train in models/ (`wdir: models`), where it found no stages/train.py
        if _runs_from(definition) != ".":
            raise _refuse(
                f"stage {name!r} runs {cmd!r} in wdir {definition['wdir']!r}, and the stages run from the "
                f"repository's root, where their paths table places what they write",
                where=PIPELINE.name,
                fix="remove its wdir, or restore it with",
            )


def _read_of(definition: dict) -> list:
    """What the stages read of a stage's definition: its params, deps, the paths of its outs,
    metrics and plots, `frozen`, and the module its command runs (`python -m stages.${item}`);
    not the rest of its command (`OMP_NUM_THREADS=${threads} python -m stages.train`) or a
    plot's title (`over ${train.epochs} epochs`), which DVC resolves for itself: both refused."""
    modules = [module for command in _commands(definition) for module in re.findall(r"stages\.\S*", command)]
    return [
        definition.get("params"),
        definition.get("deps"),
        definition.get("frozen"),
        _output_names(definition),
        modules,
    ]


# A `${...}` as DVC finds one (`\${HOME}`, escaped, is the shell's); one left unclosed is refused.
_REFERENCE = re.compile(r"(?<!\\)\$\{[^}]*\}?")


def _strings_within(value) -> list[str]:
    """The texts a value holds, each text once however many aliases name it: written out whole
    (`str()`), 125,000 aliases of a 100 KB string took 2.5 GB."""
    texts, seen, pending = [], set(), [value]
    while pending:
        each = pending.pop()
        if id(each) in seen:
            continue
        seen.add(id(each))
        if isinstance(each, str):
            texts.append(each)
        elif isinstance(each, dict):
            pending += [*each.keys(), *each.values()]
        elif isinstance(each, list):
            pending += each
    return texts


def _shown(value) -> str:
    """A value as a one-line refusal quotes it, cut short before it is written out (an aliased
    list written out whole took 2.5 GB)."""
    return value[:200] if isinstance(value, str) else short_repr(value)


def _table_name(reference: str) -> str | None:
    """The paths table's name a `${...}` reads, as DVC parses it (`${ paths.model }`, refused as
    only DVC's, and `${paths[model]}`), else None."""
    if not reference.endswith("}"):
        return None
    parts = [part.strip() for part in reference[2:-1].replace("[", ".").replace("]", "").split(".")]
    return parts[1] if len(parts) == 2 and parts[0] == "paths" else None


def _resolved(entry: str, strict: bool = True) -> str:
    r"""A path dvc.yaml declares, as DVC resolves it: each `${paths.NAME}` from the table, `\${` as `${`;
    a name the table lacks refused where `strict`, else left as written (a user's stage may add
    its own in a `vars:` of its own, which DVC merges in)."""

    def from_the_table(found: re.Match) -> str:
        name = _table_name(found[0])
        if name is None or (not strict and name not in TABLE):
            return found[0]
        return _path(name)

    return _REFERENCE.sub(from_the_table, entry).replace(r"\${", "${")


def _commands(definition: dict) -> list[str]:
    r"""A stage's command lines as the shell reads them, a `\`-newline joining two: `python -m \`
    over `stages.lr_find` ran lr_find unseen, with its defaults, while DVC recorded lr.yaml's."""
    cmd = definition.get("cmd")
    return [str(each).replace("\\\n", "") for each in (cmd if isinstance(cmd, list) else [cmd])]


def _runs_by_its_command(definition: dict, stage: str | None = None) -> bool:
    """Whether a stage's command has Python run a module of stages/ (`python -m stages.NAME`,
    `stage` where named), whatever follows (a user's `./my_stages.sh ${train.epochs}` was refused):
    by `python3 -m` too, another interpreter's path, `-mstages.lr_find`, flags clustered (`-Bm`),
    the module quoted, or commands in DVC's list form. Python's own -m only, after its options
    (`-W ignore`, `-X dev`): mypy's `-m stages.train` runs nothing of ours, and a user's
    type-check `matrix:` stage was refused as one of ours."""
    modules = [module for command in _commands(definition) for module in _modules_python_runs(command)]
    return any(module == f"stages.{stage}" if stage else module.startswith("stages.") for module in modules)


@functools.lru_cache(maxsize=1024)
def _modules_python_runs(command: str) -> tuple[str, ...]:
    """The modules a shell command has Python run with -m, read word by word: a pattern that
    matched the command took time exponential in a user's `python -Wd -Wd ...` and quadratic in
    a run of 200,000 `(`, and every stage hung reading dvc.yaml."""
    if "python" not in command:
        return ()
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unbalanced quote: its words as the shell would start them
        words = [word.strip("'\"") for word in command.split()]
    modules, at = [], 0
    while at < len(words):
        at += 1
        if re.fullmatch(r"python[\d.]*", words[at - 1].rsplit("/", 1)[-1]):
            # on from the word after its options: `python -W python -W ...` read again from each
            # `python` took time quadratic in the command
            module, at = _module_after_options(words, at)
            modules += [module] if module else []
    return tuple(modules)


def _module_after_options(words: list[str], at: int) -> tuple[str | None, int]:
    """The module of -m among Python's options from words[at] on (`-Bm`, `-mNAME`, `-W ignore`,
    `-Xdev`), else None; and where its options end."""
    while at < len(words):
        word = words[at]
        at += 1
        if not word.startswith("-") or word == "-" or word.startswith("--"):
            return None, at - 1
        for place, flag in enumerate(word[1:], start=1):
            if flag in "mWX":  # each takes the rest of the word, or the next word
                argument = word[place + 1 :]
                if not argument and at < len(words):
                    argument, at = words[at], at + 1
                if flag == "m":
                    return argument, at
                break
            if flag == "c":
                return None, at
    return None, at


# What each stage writes, by the paths table's names (train's checkpoint is its scratch, no
# output): each must be among its declared outputs (evaluate's predictions declared by another
# path were written where DVC found none, after the whole run), and by them the stage is found
# where a script of the user's runs it (`sh run.sh lr_find` hid lr_find's params declared from
# lr.yaml: it ran its defaults while DVC recorded lr.yaml's).
_WRITES = {
    "download": ("data",),
    "lr_find": ("max_lr_pick", "lr_find_metrics", "lr_find_curve"),
    "train": (
        "model",
        "model_summary",
        "train_environment",
        "train_metrics",
        "speed_metrics",
        "history",
        "lr_schedule",
    ),
    "evaluate": ("evaluate_metrics", "confusion", "per_class", "predictions", "predictions_digest"),
    "figures": (
        "lr_finder_image",
        "samples_image",
        "loss_image",
        "accuracy_image",
        "lr_schedule_image",
        "confusion_image",
        "per_class_image",
        "misclassified_image",
    ),
    "explain": ("gradcam_images",),
}


def _runs_by_its_outputs(definition: dict, stage: str | None = None) -> bool:
    """Whether a stage declares an output of a stage of stages/ (of `stage`'s where named),
    which no other stage can declare: DVC refuses an output two stages declare."""
    written = _WRITES.get(stage, ()) if stage else [name for names in _WRITES.values() for name in names]
    outputs = set(_outputs_declared(definition, strict=False))
    return any(_declared_among(TABLE[name], outputs) for name in written if isinstance(TABLE.get(name), str))


def _declared_among(path: str, outputs: set[str]) -> bool:
    """Whether an output is declared, itself or in a folder among the outputs (DVC refuses two
    stages' outputs where one holds the other): looked up, as 1,000,000 outputs compared one by
    one took minutes."""
    written = PurePosixPath(path)
    return any(str(folder) in outputs for folder in (written, *written.parents))


def _runs_a_stage(definition: dict) -> bool:
    return _runs_by_its_command(definition) or _runs_by_its_outputs(definition)


def _refuse_shapes_dvc_refuses(stages: dict) -> None:
    """A stage's deps, outs, metrics or plots that are no list, or a params entry naming a file
    with keys that are no list (`deps: 5`, `- notes.yaml: 5`), which DVC's schema refuses: the
    stages, iterating them, ended in a traceback."""
    for name, definition in _definitions(stages).items():
        for kind in ("deps", "outs", "metrics", "plots", "params"):
            if definition.get(kind) is not None and not isinstance(definition[kind], list):
                raise _refuse(
                    f"stage {name!r} has `{kind}: {_shown(definition[kind])}`, where DVC takes a list",
                    where=PIPELINE.name,
                    fix=f"write its {kind} as a list (`- ...` lines), or restore it with",
                )
        for entry in definition.get("params") or []:
            files = entry.items() if isinstance(entry, dict) else []
            keys = next(((file, keys) for file, keys in files if keys is not None and not isinstance(keys, list)), None)
            if keys:
                raise _refuse(
                    f"stage {name!r} declares `{keys[0]}: {_shown(keys[1])}` among its params, where DVC takes a "
                    f"list of keys",
                    where=PIPELINE.name,
                    fix=f"write them as a list (`- {keys[0]}: [KEY]`), or restore it with",
                )


def _refuse_params_dvc_reads_otherwise(stages: dict) -> None:
    """A stage of stages/ whose params dvc.yaml declares as keys DVC reads as patterns, or from
    another file, which DVC reads and records, while the stages read params.yaml alone: `- lr.yaml:
    [lr_find]` ran lr_find with its defaults (100 steps for lr.yaml's 20). Keys the stages do not
    read (`notes.yaml: [author]`) may come from anywhere; a whole file, which DVC reads in formats
    of its own (TOML, Python), is refused unread (a named pipe would block every stage)."""
    for name, definition in _definitions(stages).items():
        declared = definition.get("params")
        if not _runs_a_stage(definition) or not isinstance(declared, list):
            continue
        named = [(PARAMS_FILE, [entry]) for entry in declared if isinstance(entry, str)]
        named += [item for entry in declared if isinstance(entry, dict) for item in entry.items()]
        # DVC looks keys up as patterns and list indices (`lr_fin?` was lr_find's section, `explain.layers.0`
        # its first layer), which the stages read as written: lr_find ran with its defaults, and recorded
        # `lr_fin?: null`, so train took a stale pick
        patterns = [key for _, keys in named if isinstance(keys, list) for key in keys if _a_pattern(key)]
        if patterns:
            raise _refuse(
                f"stage {name!r} declares the params key {patterns[0]!r}, a pattern or list index that DVC resolves "
                f"while the stages read keys as written",
                where=PIPELINE.name,
                fix="name the key itself (`- lr_find`, `- explain.layers`), or restore it with",
            )
        # DVC records one spelling's keys (`params.yaml` and its absolute path in one mapping: the
        # last's), the stages read the first's, and figures drew from a model trained with other params
        spellings = list(dict.fromkeys(str(file) for file, _ in named if _is_the_params_file(file)))
        if len(spellings) > 1:
            raise _refuse(
                f"stage {name!r} names {PARAMS_FILE} by {len(spellings)} spellings ({', '.join(spellings)}), of which "
                f"DVC records the keys of one",
                where=PIPELINE.name,
                fix=f"declare its keys under one (`- {PARAMS_FILE}: [KEY]`, or each as `- KEY`), or restore it with",
            )
        for file, keys in named:
            if _is_the_params_file(file):
                continue
            if not keys:
                raise _refuse(
                    f"stage {name!r} declares the whole of {file} as its params, while the stages read every param "
                    f"from {PARAMS_FILE}",
                    where=PIPELINE.name,
                    fix=f"name the keys it takes from {file} (`- {file}: [KEY]`), those of {PARAMS_FILE}'s sections "
                    f"in {PARAMS_FILE}, or restore it with",
                )
            ours = [key for key in keys if isinstance(key, str) and _read_by_the_stages(key)]
            if ours:
                raise _refuse(
                    f"stage {name!r} declares its params {', '.join(ours)} from {file}, while the stages read every "
                    f"param from {PARAMS_FILE}",
                    where=PIPELINE.name,
                    fix=f"move them into {PARAMS_FILE} and declare them there, or restore it with",
                )


def _a_pattern(key: object) -> bool:
    """Whether DVC reads a params key of the stages' sections as a glob pattern or with a list
    index in it (any part int() reads: `-1`, ` 1`, `0_1`); a key of the user's own (`runs.2026`)
    is theirs to write."""
    if not isinstance(key, str):
        return False
    parts = key.split(".")
    patterned = [re.search(r"[*?\[\]]", part) is not None or _an_index(part) for part in parts]
    return any(patterned) and (patterned[0] or parts[0] in Params.__dataclass_fields__)


def _an_index(part: str) -> bool:
    try:
        int(part)
    except ValueError:
        return False
    return True


def _read_by_the_stages(key: str) -> bool:
    """Whether a dotted params key names a section or a param of params.yaml (`train.notes`,
    which no stage reads, was refused, and moved into params.yaml, refused as unknown there)."""
    section = Params
    for part in key.split("."):
        fields = typing.get_type_hints(section) if dataclasses.is_dataclass(section) else {}
        if part not in fields:
            return False
        section = fields[part]
    return True


_PIPELINE = _read_pipeline()
TABLE = _read_table(_PIPELINE)


def _definition(stage: str) -> dict:
    """dvc.yaml's definition of the stage (see _named_definition)."""
    return _named_definition(stage)[1]


def _named_definition(stage: str) -> tuple[str, dict]:
    """dvc.yaml's name and definition of the stage: the one declaring its outputs, which DVC ties
    to one stage (a script of the user's runs it: `sh run.sh lr_find`; a stage of the user's,
    `mypy -m stages.lr_find` or a profiler's, was taken for it), else the one whose command runs
    it, where a user renamed it (`find_lr:` ran with no params recorded, and train refused its
    pick), and not a stage of the user's that took its name (`download:` running a script of theirs, which `dvc
    repro download` was then advised to run); else the one of its name. A `foreach` stage's
    definition is its `do:`, where DVC reads its cmd, params, outs and `frozen` (read at the
    top, lr_find under `foreach` recorded no params, and train refused its pick again)."""
    definitions = _definitions(_PIPELINE["stages"]).items()
    writing = (item for item in definitions if _runs_by_its_outputs(item[1], stage))
    running = (item for item in definitions if _runs_by_its_command(item[1], stage))
    return next(writing, None) or next(running, None) or (stage, dict(definitions).get(stage, {}))


# The definitions of each `stages:` mapping read, by its id, with the mapping (kept alive, its id
# is never another's): generated again for each question, 1,000 foreach items took minutes.
_DEFINITIONS_OF: dict[int, tuple[dict, dict[str, dict]]] = {}


def _definitions(stages: dict) -> dict[str, dict]:
    """Each stage's definition by its name, a `foreach`'s as DVC generates them."""
    known = _DEFINITIONS_OF.get(id(stages))
    if known and known[0] is stages:
        return known[1]
    definitions, budget = {}, [MAX_FILLED_BYTES]
    for name, each in stages.items():
        if isinstance(each, dict) and "foreach" in each:
            definitions.update(_generated(name, each["foreach"], each.get("do"), budget))
        elif isinstance(each, dict):
            definitions[str(name)] = each
    _DEFINITIONS_OF[id(stages)] = (stages, definitions)
    return definitions


def _generated(group: str, items, do, budget: list[int]) -> dict[str, dict]:
    """The stages DVC generates from a `foreach`, by the names it gives them (`find@lr_find`), with
    `${item}`, `${key}` and `${item.FIELD}` filled in (`cmd: python -m stages.${item}` was not
    found: lr_find recorded no params, and `dvc repro lr_find` was advised, a stage DVC lacks). A
    foreach of a vars entry, which only DVC resolves, stands as its group, `do:` as it is. What
    filling writes is taken from `budget` (bytes), and refused past it."""
    if not isinstance(do, dict):
        return {}
    if isinstance(items, dict):
        keyed = items.items()
    elif isinstance(items, list):
        # DVC's key: a plain item's text (`find@None` for null), else its index
        keyed = (
            (item if isinstance(item, str | int | float) or item is None else index, item)
            for index, item in enumerate(items)
        )
    else:
        return {group: do}
    keyed = [(str(key).lower() if isinstance(key, bool) else key, item) for key, item in keyed]  # DVC's `find@true`

    def filled(value, key, item):
        if isinstance(value, str) and "${" in value:
            budget[0] -= _filled_length(value, key, item, isinstance(items, dict))  # before writing: one took 10 MB
            if budget[0] < 0:
                raise _refuse(
                    f"filling in foreach {group!r}'s items writes more than {MAX_FILLED_BYTES:,} bytes",
                    where=PIPELINE.name,
                    fix="shorten its items or what repeats them, or restore it with",
                )
            fields = item if isinstance(item, dict) else {}
            value = re.sub(
                r"\$\{\s*item\.(\w+)\s*\}", lambda found: _as_dvc_writes(fields.get(found[1]), found[0]), value
            )
            value = re.sub(r"\$\{\s*item\s*\}", lambda found: _as_dvc_writes(item, found[0]), value)
            # DVC gives a list's foreach no key (`Could not find 'key'`): left for the check to refuse
            return re.sub(r"\$\{\s*key\s*\}", lambda _: str(key), value) if isinstance(items, dict) else value
        if isinstance(value, list):
            return [filled(each, key, item) for each in value]
        if isinstance(value, dict):
            return {name: filled(each, key, item) for name, each in value.items()}
        return value

    return {f"{group}@{key}": filled(do, key, item) for key, item in keyed}


_ITEM_REFERENCE = re.compile(r"\$\{\s*(item(?:\.(\w+))?|key)\s*\}")


def _filled_length(text: str, key, item, keyed: bool) -> int:
    """How long a text of a foreach's `do:` is once its item and key are filled in, counted
    without writing it (an item's text written out whole, `str(item)`, took 2.5 GB for aliases;
    charged at the item's length for each reference, 660 KB of a 5,200-file foreach were refused)."""
    fields = item if isinstance(item, dict) else {}
    length = len(text)
    for found in _ITEM_REFERENCE.finditer(text):
        if found[1] == "key":
            filled_in = str(key) if keyed else found[0]
        else:
            filled_in = _as_dvc_writes(fields.get(found[2]) if found[2] else item, found[0])
        length += len(filled_in) - len(found[0])
    return length


def _as_dvc_writes(value, reference: str) -> str:
    """A foreach item's value as DVC writes it into text (`true`); a list or mapping, which DVC
    refuses there ("Cannot interpolate data of type 'list'"), is left as its reference, for the
    check of what only DVC resolves: written as Python's text, it read as the whole params file."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or isinstance(value, str | int | float):
        return str(value)
    return reference


def as_declared(stage: str) -> dict:
    """How cifar.cli.run_stage runs `stage`: with what dvc.yaml declares of it, and its fixes
    worded by the names dvc.yaml gives the stages."""
    return {
        "output_folders": output_folders(),
        "declared_params": declared_params(stage),
        "outputs": declared_outputs(stage),
        "inputs": declared_inputs(stage),
        "reword": as_this_pipeline_names_them,
    }


def _defined(stage: str) -> tuple[str, dict]:
    """dvc.yaml's name and definition of a stage of stages/, refused where it has none: one in
    another dvc.yaml (training/dvc.yaml), which DVC reads and the stages do not, had its params
    go unrecorded, train's advice name a stage DVC could not find, and figures draw from a model
    trained with other params; a stage of the user's that only shares its name (`train:` writing
    notes) declared no params, and figures drew from that model without a word."""
    name, definition = _named_definition(stage)
    if stage in _WRITES and not (_runs_by_its_outputs(definition, stage) or _runs_by_its_command(definition, stage)):
        raise _refuse(
            f"no stage runs {stage} (none declares its outputs or runs `python -m stages.{stage}`), and the stages "
            f"read their params and outputs from the definition there",
            where=PIPELINE.name,
            fix=f"define it in the repository's own {PIPELINE.name} (not another dvc.yaml), or restore it with",
        )
    return name, definition


# The params.yaml keys each stage reads, a section standing for every key in it, as dvc.yaml
# declares them (tests/test_stage_params.py records each read). evaluate without `- evaluate.tta`
# ran with TTA on while DVC held it up to date, and figures' advice to run it again did nothing.
_READS = {
    "download": ("seed", "data"),
    "lr_find": (
        "seed",
        "model",
        "augment",
        "lr_find",
        "train.batch_size",
        "train.max_lr",
        "train.weight_decay",
        "train.optimizer",
        "train.momentum",
        "train.nesterov",
        "train.device",
        "train.precision",
        "train.deterministic",
    ),
    "train": ("seed", "model", "augment", "train", "lr_find"),
    "evaluate": ("evaluate.tta", "train.device", "train.precision", "train.deterministic"),
    "figures": (
        "seed",
        "augment",
        "lr_find",
        "train.epochs",
        "train.batch_size",
        "train.max_lr",
        "train.optimizer",
        "train.device",
        "train.onecycle",
        "evaluate.misclassified",
        "evaluate.tta",
    ),
    "explain": ("explain", "train.device"),
}


def check_definition(stage: str) -> None:
    """Before a stage starts: dvc.yaml defines it, with every output it writes and param it
    reads declared, and DVC runs it as that stage."""
    refuse_outputs_left_undeclared(stage)
    # every stage's: figures found evaluate's metrics without TTA, and DVC held evaluate up to date
    for each in _READS:
        if each == stage or _runs_by_its_outputs(_definition(each), each):
            refuse_params_left_undeclared(each)
    refuse_running_as_another_stage(stage)


def refuse_params_left_undeclared(stage: str) -> None:
    name, declared = _defined(stage)[0], declared_params(stage)
    undeclared = [
        key
        for key in _READS.get(stage, ())
        if not all(any(leaf == each or leaf.startswith(f"{each}.") for each in declared) for leaf in _leaf_keys(key))
    ]
    if undeclared:
        raise _refuse(
            f"stage {name!r} reads {undeclared[0]} from {PARAMS_FILE}, which it does not declare among its params: "
            f"DVC would not run it again when that changes",
            where=PIPELINE.name,
            fix=f"declare `- {undeclared[0]}` among its params, or restore it with",
        )


def _leaf_keys(key: str) -> list[str]:
    """params.yaml's keys at or under a dotted key (`train.onecycle` stands for each of its own)."""
    section = Params
    for part in key.split("."):
        section = typing.get_type_hints(section)[part]
    if not dataclasses.is_dataclass(section):
        return [key]
    return [leaf for field in dataclasses.fields(section) for leaf in _leaf_keys(f"{key}.{field.name}")]


def refuse_running_as_another_stage(stage: str) -> None:
    """DVC runs a stage of the user's (`evaluate_tta:`, a copy running `python -m stages.evaluate`
    with outputs of its own) whose command runs this one: it wrote over evaluate's outputs, and
    DVC failed after the whole run, finding the copy's own missing. DVC names the stage it runs
    in $DVC_STAGE (`train@1` for a foreach's), after the dvc.yaml that holds it where that is
    not the one in the folder DVC was started from (`../dvc.yaml:evaluate` from a subfolder:
    which dvc.yaml, the stage cannot tell; stages/ reads the repository's own)."""
    run_as, name = os.environ.get("DVC_STAGE"), _defined(stage)[0]
    if run_as is not None and run_as.rpartition(":")[2] != name:
        raise _refuse(
            f"DVC runs stage {run_as!r}, whose command runs {stage}, while stage {name!r} declares what {stage} "
            f"writes: it would write over the outputs of {name!r}, and leave its own unwritten",
            where=PIPELINE.name,
            fix=f"run {stage} as stage {name!r} (`dvc exp run -S KEY=VALUE` for other params) and remove "
            f"{run_as!r}, or restore it with",
        )


def refuse_outputs_left_undeclared(stage: str) -> None:
    """A stage dvc.yaml does not define, or an output it writes that dvc.yaml does not declare for
    it, itself or in a folder (`- data/test_predictions.csv` for evaluate's `${paths.predictions}`):
    DVC failed after the whole run, finding its own path missing, and a stage run alone wrote
    where DVC never looks."""
    name = _defined(stage)[0]
    declared = set(declared_outputs(stage))
    undeclared = [each for each in _WRITES.get(stage, ()) if not _declared_among(TABLE[each], declared)]
    if undeclared:
        raise _refuse(
            f"stage {name!r} writes {TABLE[undeclared[0]]} (the paths table's {undeclared[0]}), which it does not "
            f"declare among its outs, metrics or plots, or in a folder among them: DVC would neither cache nor "
            f"restore it",
            where=PIPELINE.name,
            fix=f"declare it as `${{paths.{undeclared[0]}}}`, or restore it with",
        )


_RERUN = re.compile(r"`dvc (repro|exp run)((?: -[a-z])*) (download|lr_find|train|evaluate|figures|explain)`")


def as_this_pipeline_names_them(message: str) -> str:
    """A message's `dvc repro [-f -s] STAGE` (or `dvc exp run ...`) advice, as this dvc.yaml has the
    stage (see repro): the stages and the cifar package word their fixes by the stages' own names."""
    return _RERUN.sub(lambda found: repro(found.group(3), found.group(2), found.group(1)), message)


def repro(stage: str, options: str = "", command: str = "repro") -> str:
    """The command that runs `stage` again, as dvc.yaml has it: by the name it gives the stage (one
    renamed was advised by its old name, which DVC does not know), and unfrozen (`frozen: true`,
    which `dvc repro` passes over, "didn't change", even with -f)."""
    try:
        name, definition = _named_definition(stage)
        frozen = definition.get("frozen") is True
    except (KeyError, TypeError, AttributeError):
        name, frozen = None, False
    if in_a_dvc_workspace_copy():
        # `dvc repro` in the workspace found the stage unchanged: the -S values lived in DVC's copy
        # only. Spelled out again for DVC's -S parser (Hydra's grammar), a value with a comma ran
        # two experiments, one with `é`, `'` or `(` none. Every frozen stage is named: the whole
        # pipeline runs again, and one frozen below lr_find (train) failed it the same way.
        frozen_ones = [
            each for each, definition in _definitions(_PIPELINE["stages"]).items() if definition.get("frozen") is True
        ]
        unfreeze = (
            f" (after removing `frozen: true` from {' and '.join(frozen_ones)} in dvc.yaml)" if frozen_ones else ""
        )
        force = " -f" * ("-f" in options.split())
        return f"`dvc exp run{force}` with this experiment's -S options, for the whole pipeline (no -s){unfreeze}"
    if name is None:
        return f"`dvc {command}{options} {stage}`"
    unfreeze = " (after removing `frozen: true` from it in dvc.yaml)" if frozen else ""
    if "@" in name and name in map(str, _PIPELINE["stages"]):  # `dvc repro`, whole, failed on it too
        renamed = f"after renaming stage {name!r} in dvc.yaml (DVC finds a name with @ only as a foreach's)"
        return f"`dvc {command}` {renamed}"
    # a foreach key `a@b`: DVC, which takes the last @ for the key's, found no `find@a@b`, nor ran
    # `dvc repro` whole (a group `fi@nd` it finds)
    group, key = _foreach_group_and_key(name)
    if "@" in key:
        renamed = (
            f"after renaming {key!r} in the foreach of stage {group!r} in dvc.yaml (DVC finds none by a key with @)"
        )
        return f"`dvc {command}` {renamed}"
    # `dvc repro fit:x` read `fit` as a file; a tab was printed `\t`
    if ":" in name or not name.isprintable():
        return f"`dvc {command}` (DVC's command line cannot name a stage {name!r}: rename it to run it alone){unfreeze}"
    # a name DVC takes for an option (`-fit`) after `--`; one with a space (`fit me`) quoted; one
    # DVC may read as a file (`score.dvc`, `dvc.lock`, `dvc.yaml`, which targets every stage) by the file
    if "." in name:
        name = f"{PIPELINE.name}:{name}"
    return f"`dvc {command}{options} {'-- ' * name.startswith('-')}{shlex.quote(name)}`{unfreeze}"


def _foreach_group_and_key(name: str) -> tuple[str, str]:
    """The foreach stage that generates `name` and its key there (the longest group's name it
    begins with: `fi@nd` before `fi`); ("", "") for a plain stage."""
    groups = [str(group) for group, each in _PIPELINE["stages"].items() if isinstance(each, dict) and "foreach" in each]
    group = max((group for group in groups if name.startswith(f"{group}@")), key=len, default="")
    return group, name[len(group) + 1 :] if group else ""


def declared_params(stage: str) -> list[str]:
    """The params.yaml keys dvc.yaml declares for `stage`, whose values DVC records in
    dvc.lock as the stage ends (none for a stage it does not define as expected)."""
    try:
        declared = _defined(stage)[1].get("params") or []
    except (KeyError, TypeError, AttributeError):
        return []
    keys = []
    for entry in declared if isinstance(declared, list) else []:
        if isinstance(entry, str):
            keys.append(entry)
        # DVC's form naming the file, `- params.yaml: [seed, model]`, or the whole file with no
        # keys: lr_find recorded no params, and train refused its pick
        elif isinstance(entry, dict) and any(_is_the_params_file(file) for file in entry):
            named = next(keys for file, keys in entry.items() if _is_the_params_file(file))
            whole = list(Params.__dataclass_fields__)
            keys += [key for key in named if isinstance(key, str)] if isinstance(named, list) and named else whole
    return keys


def _is_the_params_file(file) -> bool:
    """`params.yaml`, `./params.yaml`, or the checkout's params.yaml by another path that leads to
    it (absolute, or through a link: `conf/params.yaml -> ../params.yaml`), which DVC reads as
    well: lr_find read it as another file, recorded no params, and train refused its pick."""
    try:
        return os.path.realpath(REPO / str(file)) == os.path.realpath(REPO / PARAMS_FILE)
    except (ValueError, UnicodeError):  # a NUL byte, or a name the locale cannot encode: another file
        return False


def declared_outputs(stage: str) -> list[str]:
    """The paths dvc.yaml declares as `stage`'s outputs, metrics and plots, each `${paths.NAME}`
    read from the table (none for a stage it does not define as expected)."""
    return _outputs_declared(_definition(stage))


def _outputs_declared(definition: dict, strict: bool = True) -> list[str]:
    """A definition's outputs, metrics and plots, as DVC resolves their paths: from its wdir, and
    normalised (`./models/max_lr.json` was no lr_find's)."""
    wdir = _runs_from(definition)
    return [
        _in_the_repository(posixpath.join(wdir, _resolved(name, strict)))
        for name in _output_names(definition)
        if isinstance(name, str)
    ]


def _runs_from(definition: dict) -> str:
    """A definition's wdir as a path from the repository's root, as DVC resolves it: `.` for
    the root however spelled (`models/..`, its absolute path), and `/` no root's."""
    return os.path.relpath(os.path.normpath(os.path.join(REPO, str(definition.get("wdir") or "."))), REPO)


def _output_names(definition: dict) -> list:
    """The paths a definition's outs, metrics and plots name as written: every key of a mapping
    entry, as DVC reads one (`- a.csv: {}` / `b.csv: {}` declares both)."""
    try:
        entries = [entry for kind in ("outs", "metrics", "plots") for entry in definition.get(kind) or []]
    except (KeyError, TypeError, AttributeError):
        return []
    return [key for entry in entries for key in (entry if isinstance(entry, dict) else [entry])]


def _in_the_repository(path: str) -> str:
    """A path as DVC resolves it: normalised, and relative to the repository where it is an
    absolute one inside it (`/home/me/cifar-dvc/models/max_lr.json` was no lr_find's output)."""
    if posixpath.isabs(path) and posixpath.normpath(path).startswith(f"{REPO}/"):
        return posixpath.relpath(path, REPO)
    return posixpath.normpath(path)


def declared_inputs(stage: str) -> list[str]:
    """The files and folders that dvc.yaml declares as `stage`'s deps, whose contents DVC
    records in dvc.lock as the stage ends, but for its Python modules, which cifar.cli checks by
    their contents (none for a stage it does not define as expected)."""
    try:
        deps = _definition(stage).get("deps") or []
    except (KeyError, TypeError, AttributeError):
        return []
    return [_resolved(dep) for dep in deps if isinstance(dep, str) and not dep.endswith(".py")]


def _path(name: str) -> str:
    if not isinstance(TABLE.get(name), str):
        raise _refuse(f"no path `{name}`")
    return TABLE[name]


_refuse_shapes_dvc_refuses(_PIPELINE["stages"])
_refuse_what_only_dvc_resolves(_PIPELINE["stages"])
_refuse_params_dvc_reads_otherwise(_PIPELINE["stages"])
DATA = _path("data")
LR_FIND_METRICS = _path("lr_find_metrics")
LR_FIND_CURVE = _path("lr_find_curve")
MAX_LR_PICK = _path("max_lr_pick")
MODEL = _path("model")
MODEL_SUMMARY = _path("model_summary")
TRAIN_ENVIRONMENT = _path("train_environment")
TRAIN_METRICS = _path("train_metrics")
SPEED_METRICS = _path("speed_metrics")
HISTORY = _path("history")
LR_SCHEDULE = _path("lr_schedule")
CHECKPOINT = _path("checkpoint")
EVALUATE_METRICS = _path("evaluate_metrics")
CONFUSION = _path("confusion")
PER_CLASS = _path("per_class")
PREDICTIONS = _path("predictions")
PREDICTIONS_DIGEST = _path("predictions_digest")
LR_FINDER_IMAGE = _path("lr_finder_image")
SAMPLES_IMAGE = _path("samples_image")
LOSS_IMAGE = _path("loss_image")
ACCURACY_IMAGE = _path("accuracy_image")
LR_SCHEDULE_IMAGE = _path("lr_schedule_image")
CONFUSION_IMAGE = _path("confusion_image")
PER_CLASS_IMAGE = _path("per_class_image")
MISCLASSIFIED_IMAGE = _path("misclassified_image")
GRADCAM_IMAGES = _path("gradcam_images")


def output_paths() -> tuple[Path, ...]:
    return tuple(REPO / output for output in TABLE.values())


def output_folders() -> list[str]:
    """The folders the stages write into, where an interrupted write leaves its scratch: the
    parents of every path in the table, and the download cache, where downloads and imports
    unpack."""
    return sorted({posixpath.dirname(path) for path in TABLE.values()} | {DOWNLOAD_CACHE})
