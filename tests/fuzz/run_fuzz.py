"""Mutation fuzzing of scan / rules / check on the sample models.

    python tests/fuzz/run_fuzz.py --cases 1000            # the long run: 1,000 cases per format
    python tests/fuzz/run_fuzz.py --cases 40 --seed 1     # what CI runs (tests/test_hostile.py)

Runs in its own interpreter, without TensorFlow, and forks one child per case (no
interpreter start-up per case, and a hard per-case timeout). hypothesis drives the
mutations: byte flips, truncation, inserted junk, and for .keras archives edits of
config.json inside a re-written zip. Every case must end with exit 0 (a readable but
odd model), 1 (findings, for check) or 2 with exactly one stderr line naming the file;
never a traceback, a crash signal, or a hang. Prints one JSON summary line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_models"
sys.path.insert(0, str(REPO))

from decay_audit.cli import main as cli_main  # noqa: E402

FORMATS = {
    "keras": SAMPLES / "zoo.keras",
    "keras-seed": SAMPLES / "seed.keras",
    "h5": SAMPLES / "seed.h5",
    "h5-tf-keras": SAMPLES / "tf_keras.h5",
    "weights-h5": SAMPLES / "seed.weights.h5",
    "saved-model": SAMPLES / "seed_export",
    "saved-model-tf-keras": SAMPLES / "tf_keras_savedmodel",
    "saved-model-module": SAMPLES / "tf_module_savedmodel",
}
# read-seconds below the per-case timeout: a file that hangs libhdf5 must be reported, not killed.
COMMANDS = (
    ["scan", "{path}", "--format", "json", "--limit", "read-seconds=10"],
    ["scan", "{path}", "--limit", "read-seconds=10"],
    ["rules", "{path}", "--target", "native", "--limit", "read-seconds=10"],
    ["check", "{path}", "--target", "keras", "--var-names", "bias", "--limit", "read-seconds=10"],
)


def run_case(arguments: list[str], timeout: float) -> dict:
    """Fork, run the CLI in the child with stdout/stderr to files, wait with a hard timeout."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        code = 99
        try:
            cli_main(arguments, standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 98
        except BaseException:  # noqa: BLE001 - a traceback is exactly the failure we look for
            import traceback

            traceback.print_exc()
            code = 97
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    status, usage = 0, None
    while True:
        finished, status, usage = os.wait4(pid, os.WNOHANG)
        if finished:
            break
        if time.perf_counter() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.wait4(pid, 0)
            return {"code": "timeout", "stderr": "", "seconds": timeout, "rss_mib": 0}
        time.sleep(0.002)
    err.seek(0)
    stderr = err.read().decode("utf-8", "replace")
    code = os.waitstatus_to_exitcode(status)
    return {
        "code": code,
        "stderr": stderr,
        "seconds": time.perf_counter() - start,
        "rss_mib": usage.ru_maxrss / 1024 if usage else 0,
    }


def judge(result: dict, subject: str) -> str | None:
    """None when the case behaved; else what went wrong."""
    code, stderr = result["code"], result["stderr"]
    if code == "timeout":
        return "hang"
    if code not in (0, 1, 2):
        return f"exit {code}: {stderr[-800:]}"
    if "Traceback" in stderr:
        return f"traceback: {stderr[-800:]}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code == 2 and (len(lines) != 1 or subject not in lines[0]):
        return f"exit 2 without one line naming {subject}: {stderr[-800:]}"
    return None


def mutate(data: bytes, flips, truncate, junk) -> bytes:
    buffer = bytearray(data)
    for position, value in flips:
        if buffer:
            buffer[position % len(buffer)] = value
    if junk is not None and buffer:
        position, block = junk
        position %= len(buffer)
        buffer[position:position] = block
    if truncate is not None:
        buffer = buffer[: truncate % (len(buffer) + 1)]
    return bytes(buffer)


def mutate_keras_config(data: bytes, edit: tuple[str, object]) -> bytes:
    """Structure-aware: change one value in config.json and re-zip (members stay stored)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    config = json.loads(source.read("config.json"))
    key, value = edit
    stack = [config]
    while stack:  # replace the first occurrence of key anywhere in the config
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                item[key] = value
                break
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    output = io.BytesIO()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            payload = json.dumps(config).encode() if info.filename == "config.json" else source.read(info.filename)
            target.writestr(info.filename, payload)
    return output.getvalue()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
CONFIG_KEYS = st.sampled_from(
    [
        "class_name",
        "layers",
        "config",
        "name",
        "use_bias",
        "module",
        "units",
        "trainable",
        "compile_config",
        "build_config",
        "registered_name",
    ]
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=40, help="cases per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="decay-audit-fuzz-"))
    stats = {"cases": {}, "failures": [], "slowest": (0.0, ""), "peak_rss_mib": 0.0, "peak_case": ""}
    try:
        for name, sample in FORMATS.items():
            stats["cases"][name] = fuzz_format(name, sample, work, stats, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats["peak_rss_mib"] = round(stats["peak_rss_mib"], 1)
    print(json.dumps(stats))
    return 1 if stats["failures"] else 0


def fuzz_format(name: str, sample: Path, work: Path, stats: dict, args: argparse.Namespace) -> int:
    target_file = sample / "saved_model.pb" if sample.is_dir() else sample
    original = target_file.read_bytes()
    counter = {"n": 0}

    @seed(args.seed)
    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=16),
        truncate=st.none() | st.integers(0, 1 << 30),
        junk=st.none() | st.tuples(st.integers(0, 1 << 30), st.binary(min_size=1, max_size=64)),
        config_edit=st.none() | st.tuples(CONFIG_KEYS, JSON_VALUES),
        command=st.sampled_from(COMMANDS),
    )
    def case(flips, truncate, junk, config_edit, command):
        counter["n"] += 1
        case_dir = work / f"{name}-{counter['n']}"
        if sample.is_dir():
            shutil.copytree(sample, case_dir)
            path = case_dir
            (case_dir / "saved_model.pb").write_bytes(mutate(original, flips, truncate, junk))
        else:
            case_dir.mkdir()
            path = case_dir / sample.name
            data = original
            if config_edit is not None and sample.suffix == ".keras":
                data = mutate_keras_config(data, config_edit)
            path.write_bytes(mutate(data, flips, truncate, junk))
        arguments = [part.format(path=path) for part in command]
        result = run_case(arguments, args.timeout)
        problem = judge(result, str(path))
        if result["seconds"] > stats["slowest"][0]:
            stats["slowest"] = (round(result["seconds"], 3), f"{name} {' '.join(command[:1])}")
        if result["rss_mib"] > stats["peak_rss_mib"]:
            stats["peak_rss_mib"] = result["rss_mib"]
            kept = work.parent / "decay-audit-fuzz-peak-memory"
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(case_dir, kept)
            stats["peak_case"] = f"{name}: {' '.join(arguments)}"
        if problem:
            kept = work.parent / f"decay-audit-fuzz-failure-{name}-{counter['n']}"
            shutil.copytree(case_dir, kept, dirs_exist_ok=True)
            stats["failures"].append({"format": name, "args": arguments, "problem": problem, "kept": str(kept)})
        shutil.rmtree(case_dir, ignore_errors=True)

    case()
    return counter["n"]


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway allocation fails, not the machine
    sys.exit(main())
