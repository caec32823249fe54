"""params.yaml's text as plain Python values, read by rules fit for a hand-edited file; a
file that cannot be read is a one-line ConfigError naming the line."""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from cifar.errors import ConfigError, one_line, short_repr

# params.yaml nests three levels; anything far deeper is a mistake, refused before it
# reaches Python's recursion limit.
MAX_YAML_NESTING = 20
# params.yaml with every key and a comment on each is 2.1 KB. PyYAML's pure-Python parser
# takes up to 35 s of CPU per MiB of dense YAML (a list of 500,000 numbers, 2-core CPU,
# 2026-11-30), and every stage parses the file, so a larger file is refused unread.
MAX_PARAMS_FILE_BYTES = 64 << 10


class _UnsupportedYaml(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark):
        super().__init__(problem=problem, problem_mark=mark)


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading a file as DVC's reader (ruamel.yaml, YAML 1.2) does, or
    refusing it as DVC would.

    PyYAML follows YAML 1.1, and a scalar the two read differently made a stage train with a
    value DVC never showed: `epochs: 1:00` was 60 epochs here (base 60) and the string '1:00'
    to `dvc params diff`; `010` was 8, `yes`/`on` were true. So booleans, integers and floats
    resolve by the rules ruamel.yaml applies to YAML 1.2 (below), and a value DVC takes for a
    string stays one. A key repeated in one mapping is refused, as DVC refuses it: PyYAML
    keeps the last silently, so a stage run on its own would read what `dvc repro` never runs.
    """

    def get_single_data(self):
        # YAML 1.1 (PyYAML) breaks lines at NEL, LS and PS, YAML 1.2 (DVC's reader) does not:
        # `# note<U+2028>  test_limit: 50` was a key to the stages, inside a comment to DVC.
        found = re.search("[\x85\u2028\u2029]", self.buffer)
        if found:
            line = len(re.split(r"\r\n?|\n", self.buffer[: found.start()]))
            raise _UnsupportedYaml(
                f"{unicodedata.name(found[0], 'NEXT LINE (NEL)')} (U+{ord(found[0]):04X}) is a line break to this "
                f"reader and not to DVC's; remove it",
                yaml.Mark(self.name, found.start(), line - 1, 0, None, None),
            )
        return super().get_single_data()

    def construct_mapping(self, node, deep=False):
        first_lines = {}
        for key_node, _ in node.value:
            # `<<` merges a mapping in, whose keys may override by design; DVC refuses a
            # second `<<`, as PyYAML would apply both, the last winning.
            key = "<<" if key_node.tag == "tag:yaml.org,2002:merge" else self.construct_object(key_node, deep=deep)
            try:
                repeated = key in first_lines
            except TypeError:  # an unhashable key, which the base class refuses
                continue
            if repeated:
                raise _UnsupportedYaml(
                    f"the key {short_repr(key)} appears a second time (first at line {first_lines[key]}); keep one "
                    f"of them",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_tagged(self, node):
        """A tag no safe loader knows: `!!python/tuple`, `!custom`, or a bare `=` (YAML 1.1's
        value key). DVC's reader refuses these too, naming only the tag."""
        shown = short_repr(node.value) if isinstance(node, yaml.ScalarNode) else "a value"
        raise _UnsupportedYaml(
            f"{shown} reads as the YAML tag {node.tag!r}, not a plain value; write a number, true/false, null "
            f"or text (quoted, as in '=', where it holds YAML's own characters)",
            node.start_mark,
        )

    def construct_yaml_int(self, node):
        # YAML 1.2: a leading zero is decimal (`010` is 10, not octal 8); 0o, 0x and 0b give the base.
        text = self.construct_scalar(node).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
        if not (digits[2:] if base != 10 else digits):  # `_`, `-_` or `0x_` match YAML 1.2's integer pattern
            raise _UnsupportedYaml(
                f"{short_repr(node.value)} reads as an integer but holds no digit; "
                f"write a number, or quote it for text",
                node.start_mark,
            )
        digit_limit = sys.get_int_max_str_digits() or sys.int_info.default_max_str_digits
        too_long = _UnsupportedYaml(
            f"the integer {short_repr(node.value)} has more than the {digit_limit:,} decimal digits Python "
            f"converts; write the value the key takes",
            node.start_mark,
        )
        try:
            value = sign * int(digits[2:] if base != 10 else digits, base)
        except ValueError:
            if base == 10 and len(digits) > digit_limit:
                raise too_long from None
            raise _UnsupportedYaml(  # `!!int 2.0`: a tag forces the integer constructor on any text
                f"{short_repr(node.value)} is tagged !!int but is not an integer; write an integer", node.start_mark
            ) from None
        # 0x and 4,000 digits converts, but not to the decimal text each message about it writes.
        if value.bit_length() * math.log10(2) > digit_limit:
            raise too_long
        return value

    def construct_ordered_mapping(self, node):
        """`!!omap`, which PyYAML builds as a list of pairs and DVC's reader as a mapping,
        which a stage then read as a list nobody wrote."""
        mapping = {}
        yield mapping
        pairs = super().construct_yaml_omap(node)
        entries = next(pairs)
        for _ in pairs:  # fills the entries
            pass
        for index, (key, value) in enumerate(entries):
            if key in mapping:
                raise _UnsupportedYaml(
                    f"the key {short_repr(key)} appears a second time in an ordered mapping; keep one of them",
                    node.value[index].start_mark,
                )
            mapping[key] = value

    def construct_yaml_float(self, node):
        if ":" in self.construct_scalar(node):  # `!!float 1:40`: 100.0 here, no number to DVC's reader
            raise _UnsupportedYaml(
                f"{short_repr(node.value)} is a base-60 number to YAML 1.1 and no number to DVC's reader; write it "
                f"in base 10",
                node.start_mark,
            )
        try:
            return super().construct_yaml_float(node)
        except ValueError:  # `._` matches YAML 1.2's float pattern yet holds no digit
            raise _UnsupportedYaml(
                f"{short_repr(node.value)} reads as a number but is not one; write a number, or quote it for text",
                node.start_mark,
            ) from None

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):  # month 13, an offset of 99 hours
            raise _UnsupportedYaml(
                f"{short_repr(node.value)} reads as a date but is not one; write the value the key takes, "
                f"or quote it for text",
                node.start_mark,
            ) from None


class _ParamsLoader(Yaml12Loader):
    """Yaml12Loader, made fit for a hand-edited params.yaml. Anchors and aliases are refused:
    params.yaml never needs them, and an alias bomb (aliases of aliases) expands into a
    structure too big to print or check. Nesting is bounded."""

    def __init__(self, stream):
        super().__init__(stream)
        self.nesting = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _UnsupportedYaml(
                "anchors and aliases (&name, *name) are not supported; write each value out", event.start_mark
            )
        if self.nesting >= MAX_YAML_NESTING:
            raise _UnsupportedYaml(
                f"nested more than {MAX_YAML_NESTING} levels deep; params.yaml's sections nest three", event.start_mark
            )
        self.nesting += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1


# The implicit resolvers ruamel.yaml 0.19 (DVC's reader) applies to YAML 1.2: the core
# schema's, plus `_` between digits and 0b binary, which ruamel.yaml also reads as numbers.
# Each is tried in this order for a scalar's first character; null, timestamps and `<<`
# stay as PyYAML has them, which ruamel.yaml reads alike.
_YAML_1_2_RESOLVERS = [
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
        "-+0123456789.",
    ),
]
_REPLACED_TAGS = {tag for tag, _, _ in _YAML_1_2_RESOLVERS}
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", Yaml12Loader.construct_yaml_float)
Yaml12Loader.add_constructor("tag:yaml.org,2002:omap", Yaml12Loader.construct_ordered_mapping)
Yaml12Loader.add_constructor("tag:yaml.org,2002:timestamp", Yaml12Loader.construct_yaml_timestamp)
Yaml12Loader.add_constructor(None, Yaml12Loader.construct_tagged)
Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _YAML_1_2_RESOLVERS:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), list(_first))


# The file DVC reads params from by default, and the stages and cifar.load_params too.
PARAMS_FILE = "params.yaml"


def declared_values(keys: Iterable[str], path: str = PARAMS_FILE) -> dict[str, object]:
    """The file's values at dotted `keys` (`train`, `lr_find.num_iter`), as DVC records a
    stage's params in dvc.lock; None where there is none."""
    raw = read_params_file(Path(path))
    values = {}
    for key in keys:
        value = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values[key] = value
    return values


def read_params_file(path: Path) -> object:
    """The file's YAML as plain Python values, or a one-line ConfigError."""
    try:
        path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root, where params.yaml lives") from None
    except OSError as error:  # a symbolic link that loops, a folder on the way that may not be searched
        raise ConfigError(
            f"{path}: cannot read it ({error.strerror}); make it the YAML file of the pipeline's parameters"
        ) from None
    # Opening a named pipe would wait for a writer, a device could be read forever.
    if not path.is_file():
        raise ConfigError(
            f"{path}: a folder, named pipe or device, not a file; make it the YAML file of the pipeline's parameters"
        )
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_PARAMS_FILE_BYTES + 1)  # one byte more tells a file over the limit
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror})") from None
    if len(data) > MAX_PARAMS_FILE_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_PARAMS_FILE_BYTES >> 10} KiB, while every key with a comment takes about 2 KiB; "
            f"remove what does not belong in it"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}); save it as UTF-8"
        ) from None
    try:
        loader = _ParamsLoader(text)  # PyYAML refuses a control character (DEL, NUL) here
        try:
            raw = loader.get_single_data()
            if loader.yaml_version not in (None, (1, 2)):
                # DVC's ruamel.yaml honours it: `010` would be 8 there and 10 here.
                major, minor = loader.yaml_version
                raise ConfigError(
                    f"{path}: a %YAML {major}.{minor} directive makes DVC read its numbers by other rules than the "
                    f"stages do; remove the directive (params.yaml is YAML 1.2)"
                )
        finally:
            loader.dispose()
    except _UnsupportedYaml as error:
        raise ConfigError(f"{path}: line {error.problem_mark.line + 1}: {error.problem}") from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise ConfigError(
            f"{path}: not valid YAML at line {line}: the character #x{error.character:04x}, which YAML does not "
            f"allow, even in a comment; remove it"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    except (KeyError, AttributeError, IndexError, TypeError, ValueError, OverflowError) as error:
        # PyYAML's own constructors on an explicit tag they cannot apply: `!!bool maybe`, `!!set 5`.
        raise ConfigError(
            f"{path}: a tagged value YAML cannot build ({type(error).__name__}: {one_line(error)}); "
            f"write a plain value, without a !!tag"
        ) from None
    if raw is None:
        # Every key would take its default: the full recipe on the official data, from a file
        # emptied by mistake (a failed save, `> params.yaml`).
        raise ConfigError(
            f"{path}: holds no parameters (empty, or comments only); write them, or restore the committed ones "
            f"with `git checkout {path}`"
        )
    return raw


def first_difference(key: str, before: object, after: object) -> tuple[str, object, object]:
    """The innermost key under `key` whose values differ (`train.weight_decay`, not `train`)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for inner in [*before, *(name for name in after if name not in before)]:
            if before.get(inner) != after.get(inner):
                return first_difference(f"{key}.{inner}", before.get(inner), after.get(inner))
    return key, before, after


def shown(value: object) -> str:
    return short_repr(value) if value is not None else "no value"


def is_plain_data(value: object) -> bool:
    """Whether `value` holds only what YAML and JSON read: None, bools, numbers, text, lists and
    dicts of text keys. A weights-only torch.load also hands over tensors, whose `!=` is not a
    bool: a tensor in a recorded param ended figures and train in a RuntimeError."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif item is not None and not isinstance(item, (bool, int, float, str)):
            return False
    return True


def ran_with_other_params(recorded: object, stage: str, keys: Sequence[str]) -> str | None:
    """What differs between the params `stage` recorded it ran with (declared_values's, read
    back) and params.yaml's now, in words; None when nothing does. A stage run on its own
    after an edit read an output of the old values as if of the new."""
    if not isinstance(recorded, dict) or not recorded:  # figures said "train ran with seed = no value"
        return f"{stage} recorded no params it ran with (an older version of it, or an edit, left them out)"
    if not is_plain_data(recorded):
        return f"{stage} recorded the params it ran with as values no params.yaml holds (an edit put them there)"
    now = declared_values(keys)
    for name in keys:
        if recorded.get(name) != now[name]:
            key, old, new = first_difference(name, recorded.get(name), now[name])
            return f"{stage} ran with {key} = {shown(old)}, but {PARAMS_FILE} now says {shown(new)}"
    return None
