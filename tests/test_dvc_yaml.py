"""dvc.yaml is honest: deps are exactly what each stage runs (its modules and the pinned
packages they import), every path is written once, in its paths table, which the stages read
through stages/paths.py, and every output is DVC-cached, so DVC's run cache can restore any
stage. README's pipeline table documents the same outputs."""

import ast
import fnmatch
import importlib.metadata
import itertools
import os
import re
import sys
import tracemalloc
from pathlib import PurePosixPath

import pytest
from gto.constants import assert_name_is_valid

from cifar.errors import ConfigError
from code_graph import MODULES, REPO, reachable, third_party_imports
from dvc_internals import resolved_pipeline

PIPELINE = resolved_pipeline()
STAGES = PIPELINE["stages"]
sys.path.insert(0, str(REPO))
from stages import paths  # noqa: E402

# The stages' outputs: every path of the table but the resume checkpoint (scratch, never an output).
OUTPUTS = set(paths.TABLE.values()) - {paths.CHECKPOINT}


def declared(definition: dict, kind: str) -> dict[str, dict]:
    """A stage's outs, metrics or plots as {path: options}."""
    entries = {}
    for entry in definition.get(kind, []):
        path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        entries[path] = options or {}
    return entries


def test_the_stages_a_stage_module_may_be_started_as_are_dvc_yamls():
    import stages

    assert {STAGES[stage]["cmd"] for stage in STAGES} == {f"python -m stages.{name}" for name in stages.STAGES}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_its_script_and_the_modules_it_imports(stage):
    definition = STAGES[stage]
    module = definition["cmd"].split()[-1]
    assert definition["cmd"] == f"python -m {module}"
    # Every module that runs counts: imports at a module's top or inside a function, and
    # each package's __init__ (cifar/__init__.py runs before any cifar module does).
    imported = reachable(module)
    assert "cifar" in imported
    code_deps = {d for d in definition["deps"] if d.startswith(("cifar", "stages"))}
    assert code_deps == {MODULES[name].relative_to(REPO).as_posix() for name in imported}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_path_of_the_table_the_stage_reads(stage):
    """figures read evaluate's metrics without them among its deps: `dvc status` saw nothing to
    re-run after they changed."""
    source = MODULES[STAGES[stage]["cmd"].split()[-1]].read_text()
    named = {getattr(paths, name) for name in re.findall(r"\bpaths\.([A-Z_]+)\b", source)}
    read = named & OUTPUTS - set(paths.declared_outputs(stage))
    assert read <= set(STAGES[stage]["deps"])


# The pinned packages the stages import (a dep of every stage), and DVC with the test tools.
STAGE_REQUIREMENTS, TOOL_REQUIREMENTS = "requirements-stages.txt", "requirements.txt"


def pins(requirements: str) -> dict[str, str]:
    """name -> version of a requirements file's `name==version` lines (names normalised)."""
    lines = (line.split("#")[0].strip() for line in (REPO / requirements).read_text().splitlines())
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in (line.split("==") for line in lines if line and not line.startswith("-"))
    }


def distributions(import_names: set[str]) -> set[str]:
    """The installed distributions that provide these top-level import names (PIL: pillow)."""
    provided = importlib.metadata.packages_distributions()
    return {re.sub(r"[-_.]+", "-", dist).lower() for name in import_names for dist in provided[name]}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_depends_on_the_pinned_file_that_holds_every_package_it_imports(stage):
    assert STAGE_REQUIREMENTS in STAGES[stage]["deps"]
    modules = reachable(STAGES[stage]["cmd"].split()[-1])
    imported = set().union(*(third_party_imports(MODULES[name]) for name in modules))
    assert imported, "the imports were read"
    assert distributions(imported) <= pins(STAGE_REQUIREMENTS).keys()


def test_the_stages_pinned_file_holds_only_what_they_import_and_the_rest_is_outside_it():
    """A test or lint tool pinned among the stages' packages would re-run the pipeline on
    every upgrade; a package the stages import pinned only in requirements.txt, nothing."""
    imported = set().union(
        *(
            third_party_imports(MODULES[name])
            for stage in STAGES.values()
            for name in reachable(stage["cmd"].split()[-1])
        )
    )
    assert distributions(imported) == pins(STAGE_REQUIREMENTS).keys()
    assert not pins(STAGE_REQUIREMENTS).keys() & pins(TOOL_REQUIREMENTS).keys()
    # `pip install -c requirements.txt dvc` must install DVC alone: a nested -r would be
    # installed, not just constrained.
    assert not [line for line in (REPO / TOOL_REQUIREMENTS).read_text().splitlines() if line.startswith("-")]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_output_is_dvc_cached_so_the_run_cache_restores_it_in_any_clone(stage):
    """`dvc push --run-cache` uploads a run's records but not the files of its `cache: false`
    outputs, so another clone could not restore the stage (DVC 3.67.1; tests/test_dvc_upstream.py);
    a `persist` output turns the run cache off. Cached PNGs also keep pictures out of git."""
    outputs = {
        path: options
        for kind in ("outs", "metrics", "plots")
        for path, options in declared(STAGES[stage], kind).items()
    }
    assert outputs
    assert all(options.get("cache", True) and not options.get("persist") for options in outputs.values()), outputs


def test_the_model_is_a_model_registry_artifact():
    """DVC's model registry reads `artifacts:` in dvc.yaml: a name GTO accepts, the path of
    an output, `type: model`, a description and labels."""
    ((name, artifact),) = PIPELINE["artifacts"].items()
    assert_name_is_valid(name)
    assert artifact["path"] == paths.MODEL and artifact["type"] == "model"
    assert len(artifact["desc"].split()) >= 5 and artifact["labels"]
    assert paths.MODEL in declared(STAGES["train"], "outs")


def test_every_path_of_the_table_but_the_checkpoint_is_an_output_of_one_stage():
    outputs = [
        path
        for definition in STAGES.values()
        for kind in ("outs", "metrics", "plots")
        for path in declared(definition, kind)
    ]
    assert sorted(outputs) == sorted(OUTPUTS)


def test_dvc_yaml_spells_each_path_only_in_its_paths_table():
    """Everywhere else (deps, outs, plots, charts, the registry, titles) it interpolates
    `${paths.NAME}`, so moving an output is a one-line edit."""
    text = paths.PIPELINE.read_text()
    table_start = text.index("\nvars:\n")
    table_end = text.index("\nstages:\n")
    elsewhere = text[:table_start] + text[table_end:]
    spelled = [
        path for path in paths.TABLE.values() if re.search(rf"(?<![\w/.]){re.escape(path)}(?![\w/.])", elsewhere)
    ]
    assert spelled == []


def readme_pipeline_paths() -> list[str]:
    """The paths README's pipeline table names, braces expanded: `a/{b,c}.x` is a/b.x, a/c.x."""
    table = (REPO / "README.md").read_text().split("## The pipeline", 1)[1].split("```", 2)[1]
    named = []
    for line in table.splitlines():
        words = line.split()
        if "->" in words:
            named.append(words[words.index("->") + 1])
        elif line.startswith(" ") and words and "/" in words[0]:
            named.append(words[0])
    expanded = []
    for path in named:
        parts = re.split(r"\{([^}]*)\}", path)
        choices = [[part] if index % 2 == 0 else part.split(",") for index, part in enumerate(parts)]
        expanded += ["".join(pieces) for pieces in itertools.product(*choices)]
    return expanded


def names_output(named: str, output: str) -> bool:
    """README names an output by its path, a pattern matching it, or a file inside it."""
    return named == output or fnmatch.fnmatch(output, named) or named.startswith(output + "/")


def test_readme_pipeline_table_names_exactly_the_stages_outputs():
    named = readme_pipeline_paths()
    assert len(named) > len(STAGES)
    assert [path for path in named if not any(names_output(path, output) for output in OUTPUTS)] == []
    assert sorted(output for output in OUTPUTS if not any(names_output(path, output) for path in named)) == []


def test_tests_take_the_stages_paths_from_stages_paths():
    """A test that spells out a path of dvc.yaml's table (alone or in a message) would miss
    its move; params.yaml is exempt, as tests write their own params files by that name."""
    named = {value: name for name, value in paths.TABLE.items()}
    spelled = re.compile("|".join(rf"(?<![\w/.]){re.escape(value)}(?![\w.])" for value in named))
    found = []
    for test_file in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(test_file.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and spelled.search(node.value):
                found.append(f"{test_file.name}:{node.lineno}: {spelled.search(node.value).group()}")
    assert not found, "spelled out instead of paths.NAME:\n" + "\n".join(found)


def test_resume_checkpoints_are_ignored_by_git_and_dvc():
    folder = "/" + paths.CHECKPOINT.split("/")[0] + "/"
    assert folder in (REPO / ".gitignore").read_text().splitlines()
    assert folder in (REPO / ".dvcignore").read_text().splitlines()


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (["seed", "train.optimizer"], ["seed", "train.optimizer"]),
        ([{"params.yaml": ["seed", "train.optimizer"]}], ["seed", "train.optimizer"]),
        ([{"params.yaml": None}], ["seed", "model", "data", "augment", "lr_find", "train", "evaluate", "explain"]),
        ([{"./params.yaml": ["seed"]}], ["seed"]),
        ([{"other.yaml": ["seed"]}], []),
        ([{"{repo}/params.yaml": ["seed"]}], ["seed"]),
        ([{"/elsewhere/params.yaml": ["seed"]}], []),
    ],
    ids=["keys", "file-and-keys", "whole-file", "file-spelt-otherwise", "another-file", "absolute", "absolute-other"],
)
def test_declared_params_are_read_in_each_of_dvcs_forms(monkeypatch, written, read):
    """`- params.yaml: [seed, model]`, valid in DVC, was read as no params: lr_find recorded none,
    and train refused its pick with advice to re-run lr_find, which recorded none again."""
    written = [
        {file.format(repo=paths.REPO): keys for file, keys in entry.items()} if isinstance(entry, dict) else entry
        for entry in written
    ]
    lr_find = {"cmd": "python -m stages.lr_find", "params": written}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"lr_find": lr_find}})
    assert paths.declared_params("lr_find") == read


@pytest.mark.parametrize(
    "command",
    [
        "python -m stages.lr_find",
        "python3 -m stages.lr_find",
        ".venv/bin/python -m stages.lr_find",
        ["python -m stages.lr_find"],
        ["echo start", "python -mstages.lr_find; echo done"],
        "python -Bm stages.lr_find",
        "python -m 'stages.lr_find'",
        'python -m "stages.lr_find"',
        "python -m \\\n  stages.lr_find\n",
        "python -m\\\nstages.lr_find",
        "python -W ignore -X dev -m stages.lr_find",
    ],
    ids=[
        "python",
        "python3",
        "venv",
        "list",
        "list-of-two",
        "flags-clustered",
        "quoted",
        "double-quoted",
        "continued-on-the-next-line",
        "continued-with-no-space",
        "options-with-arguments",
    ],
)
def test_a_renamed_stage_is_found_by_its_command(monkeypatch, command):
    """`lr_find:` renamed `find_lr:` in dvc.yaml: lr_find recorded no params, and checked none
    (its command in DVC's list form too, or continued over two lines, as the shell reads it)."""
    renamed = {"find_lr": {"cmd": command, "params": ["seed"], "deps": ["stages/lr_find.py"]}}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": renamed})
    assert paths.declared_params("lr_find") == ["seed"]


@pytest.mark.parametrize(
    "output",
    [
        "${paths.max_lr_pick}",
        "${ paths.max_lr_pick }",
        "${paths[max_lr_pick]}",
        paths.MAX_LR_PICK,
        f"./{paths.MAX_LR_PICK}",
    ],
    ids=["as-shipped", "spaces-in-the-braces", "brackets", "spelled-out", "spelled-from-dot"],
)
def test_a_stage_a_script_of_the_users_runs_is_found_by_its_outputs(monkeypatch, output):
    """`find_lr:` running `sh run.sh lr_find`, a wrapper script: lr_find recorded no params, and
    train refused its pick, advising `dvc repro lr_find`, a stage DVC lacks, again and again."""
    wrapped = {
        "lr_find": {"cmd": "python scripts/my_lr_sweep.py", "params": ["model"], "outs": ["sweep.json"]},
        "find_lr": {"cmd": "sh run.sh lr_find", "params": ["seed"], "outs": [output]},
    }
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": wrapped})
    assert paths.declared_params("lr_find") == ["seed"]
    assert paths.declared_outputs("lr_find") == [paths.MAX_LR_PICK]
    assert paths.repro("lr_find") == "`dvc repro find_lr`"


def test_a_stage_run_from_a_wdir_is_found_by_its_outputs_as_dvc_resolves_them(monkeypatch):
    """`wdir: tools` with `../${paths.max_lr_pick}`: DVC's lr_find, the stages' none; it recorded
    no params, and train's advice to run it again recorded none again. Found, its wdir is refused."""
    wrapped = {"find_lr": {"cmd": "sh run.sh lr_find", "wdir": "tools", "outs": ["../${paths.max_lr_pick}"]}}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": wrapped})
    assert paths.declared_outputs("lr_find") == [paths.MAX_LR_PICK]
    with pytest.raises(ConfigError, match=re.escape("stage 'find_lr' runs 'sh run.sh lr_find' in wdir 'tools'")):
        paths._refuse_what_only_dvc_resolves(wrapped)


@pytest.mark.parametrize("wdir", ["models/..", str(REPO), "."], ids=["up-and-back", "absolute", "dot"])
def test_a_wdir_that_is_the_repository_root_is_the_root(monkeypatch, wdir):
    """`wdir: models/..` and the checkout's absolute path, where DVC runs the stage from the root,
    were refused as running elsewhere."""
    evaluate = {"cmd": "python -m stages.evaluate", "wdir": wdir, "metrics": ["${paths.evaluate_metrics}"]}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"evaluate": evaluate}})
    paths._refuse_what_only_dvc_resolves({"evaluate": evaluate})
    assert paths.declared_outputs("evaluate") == [paths.EVALUATE_METRICS]


@pytest.mark.parametrize(
    ("run_as", "refused"),
    [("evaluate", False), ("../dvc.yaml:evaluate", False), ("evaluate_tta", True), ("evaluation@tta", True)],
    ids=["itself", "itself-from-a-subfolder", "a-copy", "a-foreach-item"],
)
def test_a_stage_run_by_dvc_as_another_stage_is_refused_before_it_writes(monkeypatch, run_as, refused):
    """`evaluate_tta:` running `python3 -m stages.evaluate` with metrics of its own: the stage wrote
    over evaluate's outputs, and DVC failed after the whole run, finding the copy's missing."""
    evaluate = {"cmd": "python -m stages.evaluate", "metrics": ["${paths.evaluate_metrics}"]}
    copy = {"cmd": "python3 -m stages.evaluate", "metrics": ["metrics/evaluate_tta.json"]}
    each = {"foreach": ["tta"], "do": {"cmd": "python -m stages.evaluate", "metrics": ["m/${item}.json"]}}
    monkeypatch.setattr(
        paths, "_PIPELINE", {"stages": {"evaluate": evaluate, "evaluate_tta": copy, "evaluation": each}}
    )
    monkeypatch.setenv("DVC_STAGE", run_as)
    if not refused:
        paths.refuse_running_as_another_stage("evaluate")
        return
    with pytest.raises(ConfigError) as caught:
        paths.refuse_running_as_another_stage("evaluate")
    assert str(caught.value).startswith(
        f"dvc.yaml: DVC runs stage {run_as!r}, whose command runs evaluate, while stage 'evaluate' declares what "
        f"evaluate writes: it would write over the outputs of 'evaluate', and leave its own unwritten; "
    )


@pytest.mark.parametrize(
    "command",
    [
        "python " + "-Wd " * 30 + '-c \'open("notes.txt", "w")\'',
        "mkdir -p notes && echo '" + "(" * 200_000 + "' > notes.txt",
    ],
    ids=["thirty-options-of-pythons-own", "a-run-of-parentheses"],
)
def test_a_users_command_that_runs_no_stage_is_read_in_one_pass(command):
    """A pattern that matched commands took time exponential in `python -Wd -Wd ...` (30: about
    450 s) and quadratic in a run of `(` (200,000: about 50 s), for every stage as it read dvc.yaml;
    read word by word from each `python`, `python -W python -W ...` was quadratic (1 MB: 2,000 s)."""
    assert not paths._runs_by_its_command({"cmd": command})
    assert not paths._runs_by_its_command({"cmd": " ".join(["python -W"] * 100_000)})


def test_a_foreach_item_of_many_aliases_is_never_written_out():
    """An item of 125,000 aliases of a 100 KB text (12.5 GB written out) was written out to
    measure what filling it in writes: 2.5 GB before the stage was killed."""
    text = "x" * 100_000
    many = [[text] * 50] * 50 * 50
    tracemalloc.start()
    try:
        paths._definitions({"notes": {"foreach": [many], "do": {"cmd": "echo ${item} ${item.name}"}}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak:,} bytes"


def test_a_per_file_foreach_of_thousands_of_items_is_read():
    """5,200 files (660 KB filled in) were refused as writing more than 1 MiB: each `${item}` was
    charged the item and its key, and its own text besides."""
    files = [f"images/{index:05d}-of-a-camera-roll.png" for index in range(5200)]
    do = {"cmd": "convert ${item} out/${item}", "deps": ["${item}"], "outs": ["out/${item}"]}
    definitions = paths._definitions({"convert": {"foreach": files, "do": do}})
    assert definitions[f"convert@{files[-1]}"]["outs"] == [f"out/{files[-1]}"]


@pytest.mark.parametrize(
    "command",
    ["mypy -m stages.download -m stages.lr_find -m stages.train", "python -m cProfile -o prof.out -m stages.lr_find"],
    ids=["a-type-checker", "a-profiler"],
)
def test_a_stage_of_the_users_that_names_a_module_of_stages_is_not_taken_for_it(monkeypatch, command):
    """A type-check stage first in dvc.yaml, or a profiler's, was taken for lr_find: lr_find
    recorded its params (none), and train refused its pick, advising `dvc repro typecheck`."""
    stages = {
        "typecheck": {"cmd": command, "deps": ["stages"]},
        "lr_find": {"cmd": "python -m stages.lr_find", "params": ["seed"], "outs": ["${paths.max_lr_pick}"]},
    }
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": stages})
    assert paths.declared_params("lr_find") == ["seed"]
    assert paths.repro("lr_find") == "`dvc repro lr_find`"


@pytest.mark.parametrize(
    "outs",
    [
        [str(PurePosixPath(paths.MAX_LR_PICK).parent)],
        [{"${paths.lr_find_curve}": {"cache": True}, "${paths.max_lr_pick}": {"cache": True}}],
        [str(paths.REPO / paths.MAX_LR_PICK)],
    ],
    ids=["a-folder-that-holds-it", "a-mapping-of-two", "its-absolute-path"],
)
def test_an_output_declared_as_dvc_reads_it_is_declared(monkeypatch, outs):
    """A folder output holding lr_find's pick, every key of a mapping entry, and the checkout's
    own absolute path each declare it to DVC; each was refused as undeclared."""
    definition = {"cmd": "python -m stages.lr_find", "outs": outs, "metrics": ["${paths.lr_find_metrics}"]}
    definition["plots"] = ["${paths.lr_find_curve}"]
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"lr_find": definition}})
    paths.refuse_outputs_left_undeclared("lr_find")


def test_a_stage_dvc_yaml_does_not_define_is_refused(monkeypatch):
    """train defined in training/dvc.yaml, which DVC reads: the stages found none in dvc.yaml, and
    ran it with no params declared; figures then drew from a model trained with other params."""
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"evaluate": {"cmd": "python -m stages.evaluate"}}})
    with pytest.raises(ConfigError) as refused:
        paths.refuse_outputs_left_undeclared("train")
    assert str(refused.value) == (
        "dvc.yaml: no stage runs train (none declares its outputs or runs `python -m stages.train`), and the stages "
        "read their params and outputs from the definition there; define it in the repository's own dvc.yaml (not "
        "another dvc.yaml), or restore it with `git checkout dvc.yaml`"
    )


def test_a_stage_of_the_users_that_only_shares_a_stages_name_is_not_taken_for_it(monkeypatch):
    """train defined in training/dvc.yaml and a stage of the user's named train in dvc.yaml: the
    stages took the user's for it, found no params declared, and figures drew from a model trained
    with other params."""
    notes = {"cmd": "mkdir -p notes && echo notes > notes/train.txt", "outs": ["notes/train.txt"]}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"train": notes}})
    with pytest.raises(ConfigError, match=re.escape("dvc.yaml: no stage runs train (none declares its outputs")):
        paths.declared_params("train")


def test_a_matrix_stage_of_the_users_that_names_modules_of_stages_is_theirs():
    """`typecheck: {matrix: {module: [...]}, cmd: mypy -m stages.${item.module}}` was refused as a
    stage of ours that only DVC resolves: mypy's `-m` runs nothing of ours."""
    typecheck = {"matrix": {"module": ["lr_find", "train"]}, "cmd": "mypy -m stages.${item.module}"}
    paths._refuse_what_only_dvc_resolves({"typecheck": typecheck})


@pytest.mark.parametrize(
    ("item", "refused"),
    [(["seed", "model"], True), ({"seed": 0}, True), ("seed", False)],
    ids=["a-list", "a-mapping", "a-string"],
)
def test_a_foreach_item_dvc_cannot_write_into_text_is_refused(item, refused):
    """A list item as lr_find's params (`- params.yaml: ${item}`), which DVC refuses ("Cannot
    interpolate data of type 'list'"), was filled in as Python's text, and read as the whole
    params file."""
    stages = {"lr_find": {"foreach": [item], "do": {"cmd": "python -m stages.lr_find"}}}
    stages["lr_find"]["do"]["params"] = [{"params.yaml": "${item}"}]
    if not refused:
        paths._refuse_what_only_dvc_resolves(stages)
        return
    with pytest.raises(ConfigError, match=re.escape("with `${item}`, which only DVC resolves")):
        paths._refuse_what_only_dvc_resolves(stages)


@pytest.mark.parametrize(
    ("definition", "said"),
    [
        ({"cmd": "python -m stages.evaluate", "deps": 5}, "stage 'evaluate' has `deps: 5`, where DVC takes a list"),
        (
            {"cmd": "python -m stages.evaluate", "params": [{"notes.yaml": 5}]},
            "stage 'evaluate' declares `notes.yaml: 5` among its params, where DVC takes a list of keys",
        ),
    ],
    ids=["deps-a-number", "params-keys-a-number"],
)
def test_a_definition_of_shapes_dvc_refuses_is_refused_in_one_line(definition, said):
    """`deps: 5` and `- notes.yaml: 5`, which DVC's schema refuses: a traceback as every stage loaded."""
    with pytest.raises(ConfigError) as refused:
        paths._refuse_shapes_dvc_refuses({"evaluate": definition})
    assert str(refused.value).startswith(f"dvc.yaml: {said}; ")


def test_each_stage_declares_every_output_it_writes():
    """evaluate's `- data/test_predictions.csv` for `${paths.predictions}`: it wrote the table's
    path, and DVC failed after the whole run, finding its own missing."""
    for stage, written in paths._WRITES.items():
        assert sorted(paths.declared_outputs(stage)) == sorted(paths.TABLE[name] for name in written), stage
        paths.refuse_outputs_left_undeclared(stage)


@pytest.mark.parametrize(
    ("definition", "advised"),
    [
        ({"lr_find": {"cmd": "python -m stages.lr_find"}}, "`dvc repro lr_find`"),
        ({"find_lr": {"cmd": "python -m stages.lr_find"}}, "`dvc repro find_lr`"),
        (
            {"lr_find": {"cmd": "python -m stages.lr_find", "frozen": True}},
            "`dvc repro lr_find` (after removing `frozen: true` from it in dvc.yaml)",
        ),
        (
            {"lr_find": {"cmd": "python scripts/my_lr_sweep.py"}, "find_lr": {"cmd": "python -m stages.lr_find"}},
            "`dvc repro find_lr`",
        ),
        (
            {"lr_find": {"foreach": ["a"], "do": {"cmd": "python -m stages.lr_find", "frozen": True}}},
            "`dvc repro lr_find@a` (after removing `frozen: true` from it in dvc.yaml)",
        ),
        ({"find": {"foreach": ["lr_find"], "do": {"cmd": "python -m stages.${item}"}}}, "`dvc repro find@lr_find`"),
        (
            {"find": {"foreach": {"one": {"module": "lr_find"}}, "do": {"cmd": "python -m stages.${ item.module }"}}},
            "`dvc repro find@one`",
        ),
        ({"find lr": {"cmd": "python -m stages.lr_find"}}, "`dvc repro 'find lr'`"),
        ({"-find": {"cmd": "python -m stages.lr_find"}}, "`dvc repro -- -find`"),
        ({"find.dvc": {"cmd": "python -m stages.lr_find"}}, "`dvc repro dvc.yaml:find.dvc`"),
        ({"dvc.yaml": {"cmd": "python -m stages.lr_find"}}, "`dvc repro dvc.yaml:dvc.yaml`"),
        ({"dvc.lock": {"cmd": "python -m stages.lr_find"}}, "`dvc repro dvc.yaml:dvc.lock`"),
        ({2: {"cmd": "python -m stages.lr_find"}}, "`dvc repro 2`"),
        ({"find": {"foreach": [True], "do": {"cmd": "python -m stages.lr_find"}}}, "`dvc repro find@true`"),
        (
            {"fit:x": {"cmd": "python -m stages.lr_find"}},
            "`dvc repro` (DVC's command line cannot name a stage 'fit:x': rename it to run it alone)",
        ),
        (
            {"fit@1": {"cmd": "python -m stages.lr_find"}},
            "`dvc repro` after renaming stage 'fit@1' in dvc.yaml (DVC finds a name with @ only as a foreach's)",
        ),
        (
            {"find\tlr": {"cmd": "python -m stages.lr_find"}},
            "`dvc repro` (DVC's command line cannot name a stage 'find\\tlr': rename it to run it alone)",
        ),
        ({"find": {"foreach": [None], "do": {"cmd": "python -m stages.lr_find"}}}, "`dvc repro find@None`"),
        ({"fi@nd": {"foreach": ["lr_find"], "do": {"cmd": "python -m stages.${item}"}}}, "`dvc repro fi@nd@lr_find`"),
        (
            {
                "fi": {"foreach": ["x"], "do": {"cmd": "python other.py"}},
                "fi@nd": {"foreach": ["lr_find"], "do": {"cmd": "python -m stages.${item}"}},
            },
            "`dvc repro fi@nd@lr_find`",
        ),
        (
            {"find": {"foreach": {"a@b": "lr_find"}, "do": {"cmd": "python -m stages.${item}"}}},
            "`dvc repro` after renaming 'a@b' in the foreach of stage 'find' in dvc.yaml (DVC finds none by a key "
            "with @)",
        ),
    ],
    ids=[
        "as-shipped",
        "renamed",
        "frozen",
        "renamed, its name another stage's",
        "frozen under foreach",
        "foreach with its item in the command",
        "foreach of a dict with a field in the command",
        "a name with a space",
        "a name like an option",
        "a name like a .dvc file",
        "a name like the pipeline file",
        "a name like the lock file",
        "a number for a name",
        "foreach of a boolean",
        "a colon in the name",
        "a foreach's mark in a plain stage's name",
        "a tab in the name",
        "foreach of a null",
        "a foreach's mark in a foreach group's name",
        "a foreach's mark in a group's name that another group's begins",
        "a foreach's mark in a foreach key",
    ],
)
def test_the_advice_to_run_a_stage_again_works_as_dvc_yaml_has_it(monkeypatch, definition, advised):
    """`frozen: true` on lr_find: train advised `dvc repro lr_find`, which DVC passes over ("didn't
    change"), and refused the same pick again; renamed, DVC knew no stage by the name advised, or
    ran a stage of the user's that took the name, or read it as a file (`score.dvc`, `dvc.yaml`,
    which ran every stage)."""
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": definition})
    assert paths.repro("lr_find") == advised


@pytest.mark.parametrize(
    ("definition", "options", "advised"),
    [
        (
            {"cmd": "python -m stages.lr_find", "frozen": True},
            "",
            "`dvc exp run` with this experiment's -S options, for the whole pipeline (no -s) (after removing "
            "`frozen: true` from lr_find in dvc.yaml)",
        ),
        (
            {"cmd": "python -m stages.lr_find", "frozen": True, "train_frozen": True},
            "",
            "`dvc exp run` with this experiment's -S options, for the whole pipeline (no -s) (after removing "
            "`frozen: true` from lr_find and train in dvc.yaml)",
        ),
        (
            {"cmd": "python -m stages.lr_find"},
            "",
            "`dvc exp run` with this experiment's -S options, for the whole pipeline (no -s)",
        ),
        (
            {"cmd": "python -m stages.lr_find"},
            " -f -s",
            "`dvc exp run -f` with this experiment's -S options, for the whole pipeline (no -s)",
        ),
    ],
)
def test_a_stage_in_dvcs_copy_of_the_workspace_is_advised_the_experiment_again(
    monkeypatch, tmp_path, definition, options, advised
):
    """Under `dvc exp run --temp -S lr_find.num_iter=25` with lr_find frozen, or with `-s train`,
    `dvc repro lr_find` in the workspace found it unchanged (the 25 lived in DVC's copy only), and
    `dvc exp run` alone ran without it; the -S options spelled out again broke on a comma (two
    experiments), `é`, `'` or `(` (none), or a leading `@` (a traceback), and left out a key the
    experiment removed (`-S '~lr_find.num_iter'`). With train frozen too, only lr_find was named."""
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "standalone" / "tmp5y1ox2ab"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    train = {"cmd": "python -m stages.train", "frozen": definition.pop("train_frozen", False)}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"lr_find": definition, "train": train}})
    assert paths.repro("lr_find", options) == advised


NESTED = {"foreach": [{"s": {"n": "lr_find"}}], "do": {"cmd": "python -m stages.${item.s.n}"}}


@pytest.mark.parametrize(
    ("definition", "name", "what"),
    [
        ({"find": {"matrix": {"module": ["lr_find"]}, "cmd": "python -m stages.${item.module}"}}, "find", "`matrix:`"),
        ({"find": {"foreach": "${prep}", "do": {"cmd": "python -m stages.${item}"}}}, "find", "`${item}`"),
        ({"find": NESTED}, "find@0", "`${item.s.n}`"),
        ({"lr_find": {"cmd": "python -m stages.lr_find", "params": ["${knobs.sd}"]}}, "lr_find", "`${knobs.sd}`"),
        (
            {"find_lr": {"cmd": "sh run.sh ${knobs.sd}", "params": ["${knobs.sd}"], "outs": ["${paths.max_lr_pick}"]}},
            "find_lr",
            "`${knobs.sd}`",
        ),
    ],
    ids=["matrix", "foreach-of-vars", "nested-field", "vars-in-params", "vars-in-params-of-a-stage-a-script-runs"],
)
def test_a_stage_declared_with_what_only_dvc_resolves_is_refused(definition, name, what):
    """lr_find as a `matrix:` stage, under `foreach: ${prep}`, with `${item.s.n}`, or with
    `${knobs.sd}` (DVC's `seed`) among its params recorded none (or another key), and train
    refused its pick, advising a stage DVC lacks, or trained on a pick made with another seed."""
    with pytest.raises(ConfigError) as refused:
        paths._refuse_what_only_dvc_resolves(definition)
    assert str(refused.value).startswith(f"dvc.yaml: stage {name!r} runs "), str(refused.value)
    assert f" with {what}, which only DVC resolves, while the stages read what it declares" in str(refused.value)


@pytest.mark.parametrize(
    "definition",
    [
        {"cmd": "OMP_NUM_THREADS=\\${TRAIN_THREADS:-2} python -m stages.train", "outs": ["${paths.model}"]},
        {"cmd": "python -m stages.train", "outs": ["${ paths.model }", "${paths[model_summary]}"]},
        {"cmd": "sh run.sh train ${train.epochs}", "params": ["train"], "outs": ["${paths.model}"]},
        {"cmd": "OMP_NUM_THREADS=${threads} python -m stages.train", "outs": ["${paths.model}"]},
        {
            "cmd": "python -m stages.train",
            "outs": ["${paths.model}"],
            "plots": [{"${paths.history}": {"title": "${x}"}}],
        },
    ],
    ids=[
        "the-shells-own-variable-escaped",
        "paths-as-dvc-parses-them",
        "vars-in-the-command-of-a-script-of-the-users",
        "vars-in-the-command-beside-the-module",
        "vars-in-a-plots-title",
    ],
)
def test_what_dvc_leaves_to_the_shell_or_resolves_from_the_paths_table_is_accepted(monkeypatch, definition):
    """`\\${TRAIN_THREADS:-2}`, which DVC leaves for the shell, and `${ paths.model }`, which it
    reads from the paths table, were refused as what only DVC resolves; so were a `${...}` in the
    command of a script of the user's that runs train, theirs to write, in the command beside the
    module (`OMP_NUM_THREADS=${threads}`), and in a plot's title: none is what the stages read."""
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"train": definition}})
    paths._refuse_what_only_dvc_resolves({"train": definition})
    assert paths.declared_outputs("train")[0] == paths.MODEL


def test_a_stage_of_the_users_with_paths_of_its_own_is_left_to_dvc(monkeypatch):
    """A user's `report:` stage with its own `vars: [{paths: {report: ...}}]`, which DVC merges in,
    and outs `${paths.report}`: every stage refused it as "paths table: no path `report`", and
    adding it to the table made DVC refuse the file (the name defined twice)."""
    stages = {
        "report": {"vars": [{"paths": {"report": "reports/summary.md"}}], "cmd": "python report.py"}
        | {"deps": ["${paths.evaluate_metrics}"], "outs": ["${paths.report}"], "params": [{"notes.yaml": ["train"]}]},
        "evaluate": {"cmd": "python -m stages.evaluate", "outs": ["${paths.evaluate_metrics}"]},
    }
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": stages})
    paths._refuse_what_only_dvc_resolves(stages)
    paths._refuse_params_dvc_reads_otherwise(stages)
    assert paths.declared_outputs("evaluate") == [paths.EVALUATE_METRICS]


@pytest.mark.parametrize(
    ("declared", "refused_for"),
    [
        ([{"lr.yaml": ["lr_find"]}], "lr_find"),
        ([{"lr.yaml": ["lr_find.num_iter", "notes"]}], "lr_find.num_iter"),
        ([{"notes.yaml": ["author", "train.notes", "lr_finder"]}, "lr_find", {"params.yaml": ["seed"]}], None),
        ([{"notes.yaml": ["runs.2026", "runs.0.name"]}], None),
        ([{"notes\0.yaml": ["author"]}], None),
    ],
    ids=["a-section", "a-param", "keys-the-stages-do-not-read", "numbers-in-keys-of-the-users-own", "a-nul-byte"],
)
def test_params_of_the_stages_declared_from_another_file_are_refused(declared, refused_for):
    """lr_find's section moved to lr.yaml and declared `- lr.yaml: [lr_find]`, which DVC reads and
    records: the stages read params.yaml alone, and lr_find ran with its defaults (100 steps for
    lr.yaml's 20). A key no stage reads (`train.notes`) was refused too, and moved into
    params.yaml, refused there as unknown."""
    stages = {"lr_find": {"cmd": "python -m stages.lr_find", "params": declared}}
    _refused_as_declared_from_another_file(stages, refused_for)


@pytest.mark.parametrize(
    "declared",
    [
        [{"params.yaml": ["seed", "model"], "{repo}/params.yaml": ["train", "lr_find"]}],
        ["seed", {"./params.yaml": ["train"]}],
    ],
    ids=["one-mapping", "two-entries"],
)
def test_params_yaml_named_by_two_spellings_is_refused(declared):
    """`- params.yaml: [seed, model]` and `/path/to/params.yaml: [train, lr_find]` in one mapping:
    DVC recorded the second's keys, the stages checked the first's, and figures drew from a model
    trained with other params."""
    declared = [
        {file.format(repo=paths.REPO): keys for file, keys in entry.items()} if isinstance(entry, dict) else entry
        for entry in declared
    ]
    stages = {"train": {"cmd": "python -m stages.train", "params": declared}}
    with pytest.raises(ConfigError, match=r"^dvc.yaml: stage 'train' names params.yaml by 2 spellings \(params.yaml, "):
        paths._refuse_params_dvc_reads_otherwise(stages)


@pytest.mark.parametrize(
    "lr_find",
    [
        {"cmd": "sh run.sh lr_find", "outs": ["${paths.max_lr_pick}"]},
        {"cmd": "python -m \\\n  stages.lr_find\n"},
    ],
    ids=["a-script-of-the-users-runs-it", "its-command-continued-on-the-next-line"],
)
def test_params_of_the_stages_declared_from_another_file_are_refused_however_the_stage_runs(lr_find):
    """lr_find run by `sh run.sh lr_find` or `python -m \\` over `stages.lr_find` went unseen: it
    ran with its defaults (100 steps), while DVC recorded lr.yaml's 20."""
    _refused_as_declared_from_another_file({"lr_find": {**lr_find, "params": [{"lr.yaml": ["lr_find"]}]}}, "lr_find")


def _refused_as_declared_from_another_file(stages: dict, refused_for: str | None) -> None:
    if refused_for is None:
        paths._refuse_params_dvc_reads_otherwise(stages)
        return
    with pytest.raises(ConfigError) as refused:
        paths._refuse_params_dvc_reads_otherwise(stages)
    assert str(refused.value) == (
        f"dvc.yaml: stage 'lr_find' declares its params {refused_for} from lr.yaml, while the stages read every param "
        f"from params.yaml; move them into params.yaml and declare them there, or restore it with `git checkout "
        f"dvc.yaml`"
    )


@pytest.mark.parametrize(
    "declared",
    [
        ["lr_fin?"],
        [{"lr.yaml": ["lr_fin?"]}],
        [{"ex.yaml": ["explain.layers.0"]}],
        [{"ex.yaml": ["explain.layers.-1"]}],
        ["lr_find.num_*"],
    ],
)
def test_params_keys_that_dvc_resolves_as_patterns_are_refused(declared):
    """DVC looks params keys up as patterns and list indices: `lr_fin?` from lr.yaml was lr_find's
    section to DVC and none to the stages (lr_find ran with its defaults); `- "lr_fin?"` in
    params.yaml itself recorded `lr_fin?: null`, and train took a stale pick; `explain.layers.0`
    drew params.yaml's layers where DVC recorded another file's."""
    stages = {"lr_find": {"cmd": "python -m stages.lr_find", "params": declared}}
    with pytest.raises(ConfigError) as refused:
        paths._refuse_params_dvc_reads_otherwise(stages)
    assert str(refused.value).startswith("dvc.yaml: stage 'lr_find' declares the params key ")
    assert str(refused.value).endswith(
        ", a pattern or list index that DVC resolves while the stages read keys as written; name the key itself "
        "(`- lr_find`, `- explain.layers`), or restore it with `git checkout dvc.yaml`"
    )


def test_the_params_file_through_a_link_is_the_params_file(tmp_path, monkeypatch):
    """`- conf/params.yaml: [lr_find]`, a link to ../params.yaml, was refused as another file and
    "move them into params.yaml" advised, where they were (the same by its absolute path passed)."""
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/params.yaml").symlink_to("../params.yaml")
    monkeypatch.setattr(paths, "REPO", tmp_path)
    stages = {"lr_find": {"cmd": "python -m stages.lr_find", "params": [{"conf/params.yaml": ["lr_find"]}]}}
    paths._refuse_params_dvc_reads_otherwise(stages)


@pytest.mark.parametrize("file", ["lr.yaml", "lr.toml", "missing.yaml"])
def test_a_whole_params_file_of_another_name_is_refused_unread(tmp_path, monkeypatch, file):
    """`- lr.yaml:` with lr.yaml over 64 KiB, in TOML or Python (which DVC reads too), was read as
    holding none of the stages' keys, and lr_find ran with its defaults; as a named pipe, reading it
    blocked every stage."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "lr.yaml")
    stages = {"lr_find": {"cmd": "python -m stages.lr_find", "params": [{file: None}]}}
    with pytest.raises(ConfigError) as refused:
        paths._refuse_params_dvc_reads_otherwise(stages)
    assert str(refused.value) == (
        f"dvc.yaml: stage 'lr_find' declares the whole of {file} as its params, while the stages read every param "
        f"from params.yaml; name the keys it takes from {file} (`- {file}: [KEY]`), those of params.yaml's sections "
        f"in params.yaml, or restore it with `git checkout dvc.yaml`"
    )


@pytest.mark.parametrize(
    "definition",
    [
        {"sweep": {"matrix": {"lr": [1, 2]}, "cmd": "python sweep.py ${item.lr}"}},
        {"notes": {"cmd": "./my_stages.sh ${train.epochs}"}},
        {"fit": {"cmd": "python my_fit.py", "wdir": "models"}},
    ],
    ids=["a-matrix", "vars-and-stages-in-a-script-name", "a-wdir"],
)
def test_a_stage_of_the_users_may_use_what_dvc_resolves(definition):
    """A user's own stages may use anything DVC does: `./my_stages.sh ${train.epochs}` was refused."""
    paths._refuse_what_only_dvc_resolves(definition)


@pytest.mark.parametrize(
    ("definition", "said"),
    [
        ({"train": {"cmd": "python -m stages.train", "wdir": "models"}}, "in wdir 'models', and the stages run from"),
        (
            {"find": {"foreach": ["lr_find"], "do": {"cmd": "python -m stages.lr_find", "params": ["${key}"]}}},
            "with `${key}`, which only DVC resolves",
        ),
    ],
    ids=["a-wdir", "a-key-of-a-lists-foreach"],
)
def test_a_pipeline_stage_that_runs_elsewhere_or_names_what_dvc_lacks_is_refused(definition, said):
    """`wdir: models` on train: DVC ran it in models/, where it found no stages/train.py, and it
    was advised `dvc repro train`; `${key}` in a list's foreach, which DVC does not define, was
    filled in and advised."""
    with pytest.raises(ConfigError) as refused:
        paths._refuse_what_only_dvc_resolves(definition)
    assert said in str(refused.value)


def test_advice_with_options_names_the_stage_as_dvc_yaml_does(monkeypatch):
    """train renamed `fit:` and frozen: the stop line's `dvc repro -f -s train` named a stage DVC
    did not know, and, once renamed, one it passes over even with -f."""
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"fit": {"cmd": "python -m stages.train", "frozen": True}}})
    assert paths.as_this_pipeline_names_them("run `dvc repro` (or `dvc repro -f -s train` where ...)") == (
        "run `dvc repro` (or `dvc repro -f -s fit` (after removing `frozen: true` from it in dvc.yaml) where ...)"
    )
    assert paths.as_this_pipeline_names_them("(or `dvc exp run -f -s train` where ...)") == (
        "(or `dvc exp run -f -s fit` (after removing `frozen: true` from it in dvc.yaml) where ...)"
    )


def test_a_foreach_stage_declares_what_its_do_holds(monkeypatch):
    """lr_find under `foreach:`/`do:` recorded no params, and train refused its pick, again after
    the advised `dvc repro lr_find`."""
    definition = {"foreach": ["a"], "do": {"cmd": "python -m stages.lr_find", "params": ["seed", "lr_find"]}}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"lr_find": definition}})
    assert paths.declared_params("lr_find") == ["seed", "lr_find"]
    interpolated = {"foreach": ["lr_find"], "do": {"cmd": "python -m stages.${item}", "params": ["${item}"]}}
    monkeypatch.setattr(paths, "_PIPELINE", {"stages": {"find": interpolated}})
    assert paths.declared_params("lr_find") == ["lr_find"]
