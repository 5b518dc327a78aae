"""Coverage-guided fuzzing of one parser entry point with atheris (libFuzzer for Python).

    python tests/fuzz/fuzz_atheris.py TARGET [libFuzzer flags, e.g. -runs=100000 -max_total_time=600]
    python tests/fuzz/fuzz_atheris.py --list

TARGET is a name from tests/fuzz/targets.py (zip-window, h5-index, protowire, saved-model,
keras-metadata, config-walker, rule-file, zip-window-raw). decay_audit's modules are
instrumented for coverage; the corpus starts from the committed sample models (written to
a scratch directory, so the repository is never touched) and a token dictionary per format.
An input that raises anything but decay-audit's own errors is a crash: libFuzzer writes it
to ``-artifact_prefix`` (default ``tests/fixtures/fuzz/<target>-``), and it becomes a fixture
replayed by tests/test_hostile_fuzz.py.

The address space is capped (``--memory-mib``, default 2048) as the reader child caps it:
an allocation libhdf5 is talked into fails as MemoryError instead of taking the machine.
A libhdf5 loop inside one C call (what tests/fixtures/fuzz/hdf5_loop.h5 did before its
attributes were read without libhdf5) is the reader child's read-seconds problem; here libFuzzer's ``-timeout`` reports it as a timeout artifact.
Prints one JSON line at the end: target, executions, crashes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (str(REPO), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import atheris  # noqa: E402

DICTIONARIES: dict[str, list[bytes]] = {
    "config-walker": [
        b'"class_name"',
        b'"config"',
        b'"layers"',
        b'"module"',
        b'"keras.layers"',
        b'"name"',
        b'"registered_name"',
        b'"Functional"',
        b'"Sequential"',
        b'"Dense"',
        b'"MultiHeadAttention"',
        b'"LSTM"',
        b'"Bidirectional"',
        b'"layer"',
        b'"cell"',
        b'"trainable"',
        b'"build_config"',
        b'"inbound_nodes"',
        b'"keras"',
        b'"Model"',
        b'"InputLayer"',
        b"null",
        b"true",
        b"[]",
        b"{}",
    ],
    "rule-file": [
        b'"exclude"',
        b'"mask"',
        b'"preset"',
        b'"overrides"',
        b'"action"',
        b'"select"',
        b'"no-decay"',
        b'"decay"',
        b'"kernels-only"',
        b'"layer:"',
        b'"class:"',
        b'"leaf:"',
        b'"path:"',
        b'"bias"',
        b"(a+)+",
        b".*",
        b"^",
        b"$",
        b"- ",
        b": ",
        b"!!python/object",
        b"&a",
        b"*a",
    ],
    "zip-window": [
        b"PK\x01\x02",
        b"PK\x03\x04",
        b"PK\x05\x06",
        b"PK\x06\x06",
        b"PK\x06\x07",
        b"config.json",
        b"model.weights.h5",
        b"\x89HDF\r\n\x1a\n",
    ],
    "h5-index": [
        b"\x89HDF\r\n\x1a\n",
        b"TREE",
        b"HEAP",
        b"SNOD",
        b"OHDR",
        b"GCOL",
        b"model_weights",
        b"layer_names",
        b"weight_names",
        b"model_config",
        b"vars",
        b"layers",
    ],
}
DICTIONARIES["zip-window-raw"] = DICTIONARIES["zip-window"]


def _escape(token: bytes) -> str:
    """libFuzzer dictionary syntax: printable ASCII as is, the rest as \\xHH."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02X}" for b in token)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return
    from targets import TARGETS

    if sys.argv[1] == "--list":
        print("\n".join(TARGETS))
        return
    name, flags = sys.argv[1], sys.argv[2:]
    memory_mib = 2048
    for flag in list(flags):
        if flag.startswith("--memory-mib="):
            memory_mib = int(flag.split("=", 1)[1])
            flags.remove(flag)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (memory_mib << 20, hard))

    with atheris.instrument_imports(include=["decay_audit"]):
        from targets import run_one, seeds

        for module in (
            "decay_audit.loaders",
            "decay_audit.loaders.keras_zip",
            "decay_audit.loaders.h5_file",
            "decay_audit.loaders.saved_model",
            "decay_audit.loaders._protowire",
            "decay_audit.loaders._keras_tree",
            "decay_audit.loaders._zipwindow",
            "decay_audit.loaders._h5",
            "decay_audit.loaders.interface",
            "decay_audit.rules",
            "decay_audit.stages.rules",
            "decay_audit.policy",
            "decay_audit.stages.scan",
        ):
            __import__(module)
    # FUZZ_STATE / FUZZ_CORPUS: set by long_run.py, which restarts this process after a
    # libhdf5 hang (a timeout kills it) and sums executions and crashes across restarts.
    state_path = Path(os.environ["FUZZ_STATE"]) if os.environ.get("FUZZ_STATE") else None
    state = json.loads(state_path.read_text()) if state_path and state_path.exists() else {}
    executions = [0]
    crashes: dict[str, int] = dict(state.get("crashes", {}))
    base_executions = int(state.get("executions", 0))

    def save_state() -> None:
        if state_path is not None:
            state_path.write_text(json.dumps({"executions": base_executions + executions[0], "crashes": crashes}))

    prefix = next(
        (f.split("=", 1)[1] for f in flags if f.startswith("-artifact_prefix=")),
        f"{REPO / 'tests' / 'fixtures' / 'fuzz' / name}-",
    )
    stop = "--stop-on-crash" in flags
    if stop:
        flags.remove("--stop-on-crash")

    def one_input(data: bytes) -> None:
        executions[0] += 1
        if executions[0] % 50 == 0:
            save_state()
        found = run_one(name, data)
        if found is None:
            return
        if stop:
            raise found
        # Keep fuzzing: one artifact per distinct failure (exception type and where it was raised).
        frames = traceback.extract_tb(found.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        signature = f"{type(found).__name__} at {where}"
        if signature not in crashes:
            digest = hashlib.sha1(signature.encode()).hexdigest()[:12]
            Path(f"{prefix}crash-{digest}").write_bytes(data)
            print(f"CRASH {signature}: {str(found)[:200]!r} -> {prefix}crash-{digest}", flush=True)
        crashes[signature] = crashes.get(signature, 0) + 1
        save_state()

    if os.environ.get("FUZZ_CORPUS"):
        corpus = Path(os.environ["FUZZ_CORPUS"])
    else:
        corpus = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-"))
        atexit.register(shutil.rmtree, corpus, True)
    corpus.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(seeds(name)):
        if not (corpus / f"seed{index}").exists():
            (corpus / f"seed{index}").write_bytes(data)
    arguments = [sys.argv[0], str(corpus)]
    if name in DICTIONARIES:
        dictionary = corpus.parent / f"{corpus.name}.dict"
        dictionary.write_text("".join(f'"{_escape(token)}"\n' for token in DICTIONARIES[name]))
        atexit.register(dictionary.unlink, True)
        arguments.append(f"-dict={dictionary}")
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        arguments.append(f"-artifact_prefix={REPO / 'tests' / 'fixtures' / 'fuzz' / name}-")
    if name == "protowire" and not any(f.startswith("-max_len=") for f in flags):
        arguments.append("-max_len=4096")
    if not any(f.startswith("-timeout=") for f in flags):
        arguments.append("-timeout=20")
    arguments.extend(flags)

    atexit.register(save_state)
    atexit.register(
        lambda: print(
            json.dumps(
                {
                    "target": name,
                    "executions": executions[0],
                    "distinct_crashes": len(crashes),
                    "crashing_inputs": sum(crashes.values()),
                    "crashes": crashes,
                }
            ),
            flush=True,
        )
    )
    atheris.Setup(arguments, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
