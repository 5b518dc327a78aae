"""Parser entry points for coverage-guided fuzzing, one function per entry point.

Each target takes the fuzzer's bytes and runs one reader the way a scan does. The only
outcomes allowed are success and decay-audit's own errors (``DecayAuditError``: the one-line
messages), plus ``MemoryError`` under the harness's address-space cap (the reader child
reports that as a memory limit). Anything else escaping a target is a finding: in a real scan
it would surface as "unreadable (SomeError: ...)" instead of a message naming the problem.

Files are written to one scratch path per target (under /dev/shm when it exists), because
the readers take paths, as the CLI does.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_models"
for _path in (str(REPO), str(Path(__file__).resolve().parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from decay_audit.errors import DecayAuditError  # noqa: E402
from decay_audit.loaders.interface import Limits  # noqa: E402

# Small bounds: a fuzzer must not spend its time on legitimately huge declarations.
FUZZ_LIMITS = Limits(
    max_config_bytes=1 << 20, max_objects=20_000, max_variables=5_000, max_functions=5_000, read_seconds=0
)
EXPECTED: tuple[type[BaseException], ...] = (DecayAuditError, MemoryError)

_SCRATCH = Path(tempfile.mkdtemp(prefix="decay-audit-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
atexit.register(shutil.rmtree, _SCRATCH, True)


def _scratch_file(name: str, data: bytes) -> Path:
    path = _SCRATCH / name
    path.write_bytes(data)
    return path


# -- zip window: the .keras reader up to and including the member window ------------------------


def zip_window(data: bytes) -> None:
    """The whole .keras loader: zip directory, config.json, the window on model.weights.h5
    (and the in-memory image of a small member), then h5 open and walk."""
    from decay_audit.loaders.keras_zip import load_keras_zip

    load_keras_zip(_scratch_file("fuzz.keras", data), FUZZ_LIMITS)


def zip_window_raw(data: bytes) -> None:
    """Just MemberWindow over every stored member: seeks anywhere, reads in odd sizes."""
    from decay_audit.loaders._zipwindow import stored_member_window

    raw = io.BytesIO(data)
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return  # what load_keras_zip turns into "not a readable zip archive"
    for info in archive.infolist()[:64]:
        try:
            window = stored_member_window(raw, info)
        except zipfile.BadZipFile:
            continue
        if window is None:
            continue
        total = len(window.read(window.size))
        assert total == window.size, (total, window.size)
        for offset in (0, window.size // 2, max(window.size - 3, 0), window.size + 10):
            window.seek(offset)
            assert len(window.read(7)) == max(0, min(7, window.size - offset))


# -- h5 index walk -----------------------------------------------------------------------------


def h5_index(data: bytes) -> None:
    """Legacy .h5 and .weights.h5: open, read model_config, walk the index."""
    from decay_audit.loaders.h5_file import load_h5

    load_h5(_scratch_file("fuzz.h5", data), FUZZ_LIMITS)


# -- protobuf wire decoder ------------------------------------------------------------------------


def protowire(data: bytes) -> None:
    """The wire decoder alone, recursing into every length-delimited field (as a scan may)."""
    from decay_audit.loaders._protowire import ProtoDecodeError, as_signed64, as_text, iter_fields, iter_packed_varints

    # Bytes examined are budgeted: every string field is also tried as a message, so without
    # a budget one input costs its size times its nesting depth.
    stack, budget = [memoryview(data)], 2 * len(data) + 1024
    while stack and budget > 0:
        message = stack.pop()
        budget -= len(message) + 1
        try:
            for _number, wire, value in iter_fields(message):
                if wire == 2:
                    stack.append(value)
                    as_text(value)
                    with contextlib.suppress(ProtoDecodeError):
                        for item in iter_packed_varints(value):
                            as_signed64(item)
        except ProtoDecodeError:
            continue


def saved_model(data: bytes) -> None:
    """saved_model.pb through the SavedModel reader (object graph, functions, graph uses)."""
    from decay_audit.loaders.saved_model import load_saved_model

    directory = _SCRATCH / "saved_model"
    directory.mkdir(exist_ok=True)
    (directory / "saved_model.pb").write_bytes(data)
    load_saved_model(directory, FUZZ_LIMITS)


def keras_metadata(data: bytes) -> None:
    """tf_keras' keras_metadata.pb beside a real object graph."""
    from structures import wide_saved_model

    from decay_audit.loaders.saved_model import load_saved_model

    directory = _SCRATCH / "tf_keras_savedmodel"
    if not directory.exists():
        directory.mkdir()
        (directory / "saved_model.pb").write_bytes(wide_saved_model(6)[0])  # root.layer-0 ... root.layer-5
    (directory / "keras_metadata.pb").write_bytes(data)
    load_saved_model(directory, FUZZ_LIMITS)


# -- config walker ---------------------------------------------------------------------------------

_SEED_H5: dict[str, object] = {}


def config_walker(data: bytes) -> None:
    """config.json text against real weight trees: the Keras 3 walker (seed.keras weights),
    the legacy reader's config index, and the custom-class notes."""
    import h5py

    from decay_audit.loaders._keras_tree import KerasTreeWalker
    from decay_audit.loaders.h5_file import _config_index, _legacy_records
    from decay_audit.loaders.interface import parse_json
    from decay_audit.loaders.keras_zip import _unknown_class_notes

    if not _SEED_H5:
        for name in ("seed.keras",):
            weights = zipfile.ZipFile(SAMPLES / name).read("model.weights.h5")
            _SEED_H5[name] = h5py.File(io.BytesIO(weights), "r")
        _SEED_H5["seed.h5"] = h5py.File(SAMPLES / "seed.h5", "r")
    entry = parse_json(data, "config.json", FUZZ_LIMITS)
    for name in ("seed.keras",):
        KerasTreeWalker("fuzz", FUZZ_LIMITS).walk_model(_SEED_H5[name], entry if isinstance(entry, dict) else None)
    if isinstance(entry, dict):
        _unknown_class_notes(entry)
    _config_index(entry)
    _legacy_records(_SEED_H5["seed.h5"]["model_weights"], entry, "fuzz", FUZZ_LIMITS)


# -- rule and policy files ---------------------------------------------------------------------------

_SEED_REPORT: list = []


def rule_file(data: bytes) -> None:
    """A rule file for every target, checked against a real model, and the same bytes as a policy."""
    from decay_audit.files import read_structured
    from decay_audit.loaders import load
    from decay_audit.policy import load_policy_file
    from decay_audit.rules import TargetName, get_target
    from decay_audit.stages.rules import check_rules
    from decay_audit.stages.scan import scan_inventory

    if not _SEED_REPORT:
        _SEED_REPORT.append(scan_inventory(load(SAMPLES / "seed.keras", FUZZ_LIMITS)))
    path = _scratch_file("rules.yaml", data)
    with contextlib.suppress(DecayAuditError):
        load_policy_file(path)
    document = read_structured(path)
    for target in TargetName:
        tool = get_target(target, "tensorflow" if target is TargetName.KERAS else None)
        try:
            rule = tool.parse(document, str(path))
        except DecayAuditError:
            continue
        check_rules(_SEED_REPORT[0], target, rule, "tensorflow" if target is TargetName.KERAS else None)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "zip-window": zip_window,
    "zip-window-raw": zip_window_raw,
    "h5-index": h5_index,
    "protowire": protowire,
    "saved-model": saved_model,
    "keras-metadata": keras_metadata,
    "config-walker": config_walker,
    "rule-file": rule_file,
}
"""Entry point name → target."""


def seeds(name: str) -> list[bytes]:
    """Real inputs each fuzzer starts from (the committed samples, a few KB each)."""
    if name in ("zip-window", "zip-window-raw"):
        return [(SAMPLES / n).read_bytes() for n in ("seed.keras", "zoo.keras", "subclassed.keras")]
    if name == "h5-index":
        return [(SAMPLES / n).read_bytes() for n in ("seed.h5", "tf_keras.h5", "seed.weights.h5")]
    if name == "protowire":  # real messages of 64 B to 4 KiB cut out of the samples' graphs
        from decay_audit.loaders._protowire import iter_fields

        pieces, stack = (
            [],
            [(SAMPLES / d / "saved_model.pb").read_bytes() for d in ("seed_export", "tf_module_savedmodel")],
        )
        while stack and len(pieces) < 64:
            message = stack.pop()
            try:
                fields = [bytes(v) for _, wire, v in iter_fields(message) if wire == 2]
            except ValueError:
                continue
            for value in fields:
                if 64 <= len(value) <= 4096:
                    pieces.append(value)
                elif len(value) > 4096:
                    stack.append(value)
        return pieces
    if name in ("protowire", "saved-model"):
        return [(SAMPLES / d / "saved_model.pb").read_bytes() for d in ("seed_export", "tf_module_savedmodel")]
    if name == "keras-metadata":
        from structures import wide_saved_model

        return [wide_saved_model(6)[1], (SAMPLES / "tf_keras_savedmodel" / "keras_metadata.pb").read_bytes()]
    if name == "config-walker":
        return [
            zipfile.ZipFile(SAMPLES / n).read("config.json") for n in ("seed.keras", "zoo.keras", "subclassed.keras")
        ]
    if name == "rule-file":
        from decay_audit.loaders import load
        from decay_audit.rules import TargetName, get_target
        from decay_audit.stages.scan import scan_inventory

        report = scan_inventory(load(SAMPLES / "zoo.keras", FUZZ_LIMITS))
        emitted = [
            json.dumps(get_target(t, "tensorflow" if t is TargetName.KERAS else None).emit(report).document).encode()
            for t in TargetName
        ]
        return (
            emitted
            + [
                json.dumps(x).encode()
                for x in (
                    {"exclude": ["bias", "norm"]},
                    ["bias", "LayerNorm", "layer_norm"],
                    {"mask": {"dense1/kernel": True}},
                    {"preset": "kernels-only", "overrides": [{"action": "no-decay", "select": "layer:dense1"}]},
                    {"exclude_from_weight_decay": {"var_names": ["bias"]}},
                )
            ]
            + [b"exclude:\n  - bias\n  - '.*norm.*'\n"]
        )
    raise KeyError(name)


def run_one(name: str, data: bytes) -> BaseException | None:
    """Run a target on one input; the unexpected exception, or None."""
    try:
        TARGETS[name](data)
    except EXPECTED:
        return None
    except Exception as exc:  # noqa: BLE001 - a finding
        return exc
    return None
