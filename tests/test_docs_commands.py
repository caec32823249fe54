"""README's and docs/'s shell commands run as written: every `-S` set passes the params
validator (through DVC's own override writer and sweep expansion), and every command and
flag they name exists: our scripts and `python -m` modules (each flag among their argparse
declarations) and dvc's subcommands and flags (DVC's own command-line parser accepts the
whole line)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from cifar.config import load_params
from code_graph import declared_options
from dvc_internals import DvcParserError, apply_overrides, get_hydra_sweeps, parse_args
from pipeline_repo import REPO, default_params

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs the documents name that are not this project's or DVC's (gto, the model registry's
# tagger, comes with DVC).
OTHER_PROGRAMS = {"git", "pip", ".venv/bin/pip", "gto"}
# Reports for DVC's maintainers: shell scripts (builtins, here-documents) run in a bare
# repository with DVC alone, not this project's commands.
UPSTREAM_REPORTS = REPO / "docs" / "dvc-upstream-issues.md"
SET_PARAM = re.compile(r"""-S\s+(?:'([^']*)'|"([^"]*)"|([\w.]+=[^\s)]*))""")


def shell_lines(document: Path) -> list[str]:
    """The logical lines (continuations joined) of the document's bash code blocks."""
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", document.read_text(), flags=re.S | re.M)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


DOCUMENTED_LINES = [(document, line) for document in DOCUMENTS for line in shell_lines(document)]


def line_id(case) -> str:
    document, line = case
    return f"{document.name}: {line.strip()[:60]}"


def parameter_sets() -> list[tuple[Path, str, list[str]]]:
    """Each line's `-S` values, comments included (README's first example sits in one)."""
    found = []
    for document, line in DOCUMENTED_LINES:
        overrides = ["".join(groups) for groups in SET_PARAM.findall(line)]
        if overrides:
            found.append((document, line, overrides))
    return found


def test_the_documents_hold_commands_and_parameter_sets():
    assert len(DOCUMENTED_LINES) > 30 and len(parameter_sets()) > 8
    assert any("-S train.epochs=30" in line for _, line in DOCUMENTED_LINES[:3]), "README's first example"


@pytest.mark.parametrize(
    ("document", "line", "overrides"), parameter_sets(), ids=[line_id((d, line)) for d, line, _ in parameter_sets()]
)
def test_every_documented_parameter_set_is_valid(tmp_path, document, line, overrides):
    """Applied to the code's defaults as `dvc exp run -S` applies them, sweeps expanded as
    `dvc exp run --queue` expands them, each set loads without an error."""
    path = tmp_path / "params.yaml"
    for combination in get_hydra_sweeps({"params.yaml": overrides}):
        path.write_text(yaml.safe_dump(default_params(), sort_keys=False))
        apply_overrides(path, combination["params.yaml"])
        load_params(path)


def simple_commands(line: str) -> list[list[str]]:
    """The line's commands, split at &&, ||, ; and |, with the comment and leading VAR=value dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for token in [*lexer, ";"]:
        if token in ("&&", "||", ";", "|"):
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)
            if words:
                commands.append(words)
            words = []
        else:
            words.append(token)
    return commands


DOCUMENTED_COMMANDS = [
    ((document, line), command)
    for document, line in DOCUMENTED_LINES
    if document != UPSTREAM_REPORTS
    for command in simple_commands(line)
]


def assert_flags_declared(source: Path, arguments: list[str]) -> None:
    for flag in (word.split("=")[0] for word in arguments if re.match(r"--?[a-zA-Z]", word)):
        assert flag in declared_options(source), f"{source.relative_to(REPO)} declares no {flag}"


def assert_dvc_accepts(arguments: list[str]) -> None:
    try:
        parse_args(arguments)
    except (DvcParserError, SystemExit):
        pytest.fail(f"dvc refuses `dvc {' '.join(arguments)}`")


def assert_python_program(arguments: list[str]) -> None:
    if arguments[0] == "-m":
        module = arguments[1]
        if module == "dvc":
            return assert_dvc_accepts(arguments[2:])
        source = REPO / (module.replace(".", "/") + ".py")
        assert source.is_file(), f"python -m {module}: no {source.relative_to(REPO)}"
        assert_flags_declared(source, arguments[2:])
    else:
        script = REPO / arguments[0]
        assert script.is_file(), f"python {arguments[0]}: no such file"
        assert_flags_declared(script, arguments[1:])


@pytest.mark.parametrize(("where", "command"), DOCUMENTED_COMMANDS, ids=[line_id(w) for w, _ in DOCUMENTED_COMMANDS])
def test_every_documented_command_and_flag_exists(where, command):
    program, arguments = command[0], command[1:]
    if program in OTHER_PROGRAMS:
        return
    if program in ("dvc", ".venv/bin/dvc"):
        assert_dvc_accepts(arguments)
    elif program in ("python", ".venv/bin/python"):
        assert_python_program(arguments)
    elif program == "scripts/run.sh":
        assert (REPO / program).stat().st_mode & 0o111, f"{program} is not executable"
        assert_dvc_accepts(["exp", "run", *arguments])  # run.sh hands its arguments to `dvc exp run`
    elif program == "scripts/ci_local.sh":
        assert (REPO / program).stat().st_mode & 0o111, f"{program} is not executable"
        assert_flags_declared(REPO / "scripts" / "ci_local.py", arguments)  # the script hands them to ci_local.py
    elif program == "scripts/test.sh":
        assert (REPO / program).stat().st_mode & 0o111, f"{program} is not executable"
        assert '"--full"' in (REPO / program).read_text()
        assert {word for word in arguments if word.startswith("-")} <= {"--full"}, arguments
        assert all((REPO / word.split("::")[0]).exists() for word in arguments if not word.startswith("-")), arguments
    else:
        pytest.fail(f"{where[0].name} names `{program}`, which is neither this project's, DVC's nor in OTHER_PROGRAMS")


# Words about how the project was built, not about the product; "round" as a word only
# (not "around", "background" or "round-trip").
HISTORY_WORDS = re.compile(
    r"\b(?:tracker|sessions?|owed|build machines?|this issue|not yet measured in this layout)\b|\brounds?\b(?!-)", re.I
)


def test_readme_is_a_short_product_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: document.name)
def test_the_documents_use_no_words_about_how_the_project_is_built(document):
    found = [
        f"{number}: {match.group()}"
        for number, line in enumerate(document.read_text().splitlines(), 1)
        for match in HISTORY_WORDS.finditer(line)
    ]
    assert found == [], f"{document.relative_to(REPO)}"
