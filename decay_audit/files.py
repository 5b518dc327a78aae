"""The files decay-audit reads from users (rule and policy files) and writes for them.

Reading: JSON or YAML, bounded in size, never blocking on a pipe, validated against the
shipped schema. Writing: one atomic writer for reports, rule files, JUnit and pictures, so a
run that fails half-way leaves no half-written file behind, and a user's existing file is
replaced only by a complete one.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from decay_audit.errors import UsageError


def write_atomically(path: str | os.PathLike, data: str | bytes, option: str = "--output") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename.

    ``option`` names the command-line option the path came from, for the one-line error."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(str(path), f"directory of {option} does not exist")
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, bytes):
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
        else:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(data)
        # mkstemp creates the file 0600; a report or rule file is meant for others too (a CI
        # artifact, a teammate), so give it the mode open() would: 0666 less the umask.
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, path)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        raise UsageError(str(path), f"cannot write ({exc.strerror or exc})") from None


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux's
    /proc/self/status); elsewhere set and restored at once, the only portable way to read it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


MAX_RULE_FILE_BYTES = 64 * 1024 * 1024

MAX_RULE_FILE_VALUES = 1_000_000
"""Values a YAML file may expand to through aliases (``*name``): a few hundred bytes of nested
aliases otherwise expand to billions of values before any schema could look at them."""

YAML_SUFFIXES = (".yaml", ".yml")
"""Names read as YAML. Every other name is read as strict JSON: ``rules`` writes JSON to every
other name, and the snippets read the file back with ``json.load``, which accepts nothing else."""

Pointer: TypeAlias = tuple[str | int, ...]
"""Where a value sits in a document: keys and list indices from the top, ``("exclude_var_names", 2)``."""


@dataclass(frozen=True)
class Span:
    """Where a value is written: 1-based lines and columns counted in Unicode code points,
    ``end_column`` one past the last character, as SARIF counts a region."""

    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Located:
    """A rule or policy file's document, and where each of its values is written."""

    document: Any
    spans: dict[Pointer, Span]


def is_yaml(path: str | os.PathLike) -> bool:
    """Whether a rule or policy file at ``path`` is YAML (by name; any other name is JSON)."""
    return Path(path).suffix.lower() in YAML_SUFFIXES


def read_structured(path: Path) -> Any:
    """A rule or policy file: YAML (safe loader: no object construction from tags) for
    ``.yaml``/``.yml``, strict JSON for any other name. Errors name the line and column."""
    return _load(Path(path), locate=False).document


def read_located(path: Path) -> Located:
    """:func:`read_structured`, plus the span of every value: a finding about one pattern of a
    rule file can then point a reviewer at the line and column where that pattern is written."""
    return _load(Path(path), locate=True)


def _load(path: Path, locate: bool) -> Located:
    text = _read_text(path)
    if is_yaml(path):
        return _load_yaml(text, path, locate)
    return _load_json(text, path, locate)


def _read_text(path: Path) -> str:
    try:
        # Opened without blocking and checked through the descriptor: open() on a named pipe
        # with no writer never returns.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        raise UsageError(str(path), "no such file") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise UsageError(str(path), "not a regular file (a directory, pipe or device)")
    with os.fdopen(descriptor, "rb") as handle:
        if status.st_size > MAX_RULE_FILE_BYTES:
            raise UsageError(str(path), f"larger than {MAX_RULE_FILE_BYTES} bytes")
        raw = handle.read(MAX_RULE_FILE_BYTES + 1)
    if len(raw) > MAX_RULE_FILE_BYTES:  # grew after the check
        raise UsageError(str(path), f"larger than {MAX_RULE_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(str(path), f"not UTF-8 text (line {line}, byte {exc.start + 1})") from None


class _NotJson(ValueError):
    """What Python's json module accepts but JSON does not, or what a rule file must not hold."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects whose keys repeat are refused: ``json.load`` keeps the last list and drops the
    first without a word, which is how half a rule goes missing."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _NotJson(f"duplicate key {key!r}")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    """Python reads NaN and Infinity; JSON has neither."""
    raise _NotJson(f"{name} is not JSON")


def _load_json(text: str, path: Path, locate: bool) -> Located:
    how = "" if path.suffix.lower() == ".json" else " (read as JSON: only .yaml/.yml names are read as YAML)"
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        before = text[: exc.pos].rstrip(" \t\n\r")
        problem = exc.msg
        if before.endswith(",") and text[exc.pos : exc.pos + 1] in ("]", "}"):
            problem = f"trailing comma before {text[exc.pos]!r} (JSON allows none)"
        raise UsageError(str(path), f"not valid JSON at line {exc.lineno} column {exc.colno}: {problem}{how}") from None
    except _NotJson as exc:
        raise UsageError(str(path), f"not valid JSON: {exc}{how}") from None
    except RecursionError:
        raise UsageError(str(path), "nested too deeply") from None
    spans: dict[Pointer, Span] = {}
    if locate:
        try:
            _JsonSpans(text, spans).value(0, ())
        except (RecursionError, IndexError, ValueError):
            spans.clear()  # locations are a courtesy: the document itself is valid
    return Located(document, spans)


class _JsonSpans:
    """The span of every value of a JSON text that ``json.loads`` accepted, found by tokenising it
    (every token through the json module's own decoder), so a pattern is found inside the array of
    the right key and never in a key or another list that happens to hold the same text."""

    def __init__(self, text: str, spans: dict[Pointer, Span]):
        self.text = text
        self.spans = spans
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.decoder = json.JSONDecoder()

    def skip(self, index: int) -> int:
        while index < len(self.text) and self.text[index] in " \t\n\r":
            index += 1
        return index

    def value(self, index: int, pointer: Pointer) -> int:
        text = self.text
        start = index = self.skip(index)
        if text[index] == "{":
            index = self.skip(index + 1)
            while text[index] != "}":
                key, index = self.decoder.raw_decode(text, index)
                index = self.skip(index) + 1  # the colon
                index = self.skip(self.value(index, (*pointer, key)))
                if text[index] == ",":
                    index = self.skip(index + 1)
            end = index + 1
        elif text[index] == "[":
            index, position = self.skip(index + 1), 0
            while text[index] != "]":
                index = self.skip(self.value(index, (*pointer, position)))
                position += 1
                if text[index] == ",":
                    index = self.skip(index + 1)
            end = index + 1
        else:
            end = self.decoder.raw_decode(text, index)[1]
        self.spans[pointer] = Span(*self.position(start), *self.position(end))
        return end

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1


def _load_yaml(text: str, path: Path, locate: bool) -> Located:
    import yaml

    try:
        # The reader checks every character when it is made: a NUL or another non-printable
        # character is refused here, before the first try below.
        loader = _strict_yaml_loader()(text)
    except yaml.YAMLError as exc:
        raise UsageError(str(path), f"not valid YAML ({_first_line(exc)})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None, {})
        _count_values(node, path)
        document = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or type(exc).__name__
        raise UsageError(str(path), f"not valid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(str(path), f"not valid YAML ({_first_line(exc)})") from None
    except RecursionError:
        raise UsageError(str(path), "nested too deeply") from None
    finally:
        loader.dispose()
    spans: dict[Pointer, Span] = {}
    if locate:
        _yaml_spans(node, (), spans)
    return Located(document, spans)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@functools.cache
def _strict_yaml_loader() -> type:
    """PyYAML's safe loader, refusing a key that repeats in one mapping (YAML forbids it; PyYAML
    keeps the last value and drops the first without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                        continue
                    key = self.construct_object(key_node)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark
                        )
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _count_values(root: Any, path: Path) -> None:
    """Refuse a YAML document that aliases expand past :data:`MAX_RULE_FILE_VALUES` values."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if id(node) in sizes:
            if sizes[id(node)] < 0:
                raise UsageError(str(path), "a YAML alias refers to a collection that contains it")
            return sizes[id(node)]
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        if total > MAX_RULE_FILE_VALUES:
            raise UsageError(str(path), f"expands to more than {MAX_RULE_FILE_VALUES} values (YAML aliases)")
        sizes[id(node)] = total
        return total

    size(root)


def _yaml_spans(node: Any, pointer: Pointer, spans: dict[Pointer, Span]) -> None:
    import yaml

    start, end = node.start_mark, node.end_mark
    spans[pointer] = Span(start.line + 1, start.column + 1, end.line + 1, end.column + 1)
    if isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _yaml_spans(child, (*pointer, index), spans)
    elif isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            if isinstance(key, yaml.ScalarNode):
                _yaml_spans(child, (*pointer, key.value), spans)


def validate(document: Any, schema_name: str, path: Path | str) -> None:
    """Check a rule or policy file against its shipped schema; the first problem becomes one
    line naming the file. An unknown key comes first, with the known key it is closest to: a
    misspelt key is the usual mistake in a hand-written file, and it otherwise reads as a rule
    that selects nothing."""
    import itertools

    import jsonschema

    from decay_audit.schemas import load_schema

    schema = load_schema(schema_name)
    title = schema.get("title", f"{schema_name} file")
    if document is None:
        raise UsageError(str(path), f"empty: a {title} is an object with keys {', '.join(schema['properties'])}")
    from referencing import Registry, Resource

    # The one schema others refer to: a native rule file holds the policy it was made under.
    policy = load_schema("policy")
    registry: Registry[Any] = Registry().with_resource(policy["$id"], Resource.from_contents(policy))
    validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
    errors = list(itertools.islice(validator.iter_errors(document), 1000))
    if not errors:
        return
    unknown = [e for e in errors if e.validator == "additionalProperties" and isinstance(e.instance, dict)]
    if unknown:
        error = min(unknown, key=lambda e: len(e.absolute_path))
        known = list(error.schema.get("properties", {}))
        key = next(k for k in error.instance if k not in known)
        where = "/".join(str(p) for p in error.absolute_path)
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"a {title} has {', '.join(known)}"
        raise UsageError(str(path), f"unknown key {key!r}{f' in {where}' if where else ''} ({hint})")
    error = jsonschema.exceptions.best_match(errors)
    where = "/".join(str(p) for p in error.absolute_path) or "top level"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise UsageError(str(path), f"not a valid {title} at {where}: {message}")
