"""Cost linear in what a file declares: layers, object-graph nodes, functions, variables.

A file may declare whatever it likes, so the reader's cost must grow with the declaration
no faster than linearly (and stop at the --limit bounds). Asserted as time ratios between
a size and four times that size, best of three in-process runs: a linear reader gives
about 4, a quadratic one 16. No absolute times (CI machines differ).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import SAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

from structures import Function, Node, keras_metadata, saved_model, wide_saved_model  # noqa: E402

from decay_audit.loaders import load  # noqa: E402
from decay_audit.loaders.interface import Limits  # noqa: E402

IN_PROCESS = Limits(read_seconds=0)
MAX_RATIO = 6.0


_TIMER = """
import gc, sys, time
from pathlib import Path
from decay_audit.stages.scan import scan_inventory
from decay_audit.loaders import load
from decay_audit.loaders.interface import Limits

def work(path):
    inventory = load(Path(path), Limits(read_seconds=0))
    if sys.argv[1] == "scan":
        assert scan_inventory(inventory).variables
for path in sys.argv[3:]:
    work(path)  # warm imports and caches outside the timing
for path in sys.argv[3:]:
    best = float("inf")
    for _ in range(int(sys.argv[2])):
        gc.collect()
        if sys.argv[1] == "load":
            gc.disable()  # as in the reader child (loaders._isolate)
        start = time.process_time()
        work(path)
        best = min(best, time.process_time() - start)
        gc.enable()
    print(best)
"""


def _ratio(make, small: int, factor: int = 4, mode: str = "load", attempts: int = 3) -> float:
    """CPU time for ``factor * small`` over CPU time for ``small``; ``make(n)`` returns the path.

    Timed in a fresh interpreter that, like ``decay-audit scan``, has not imported
    TensorFlow (this test process has: its heap makes every garbage collection dearer and
    the timing noisier). CPU time, not wall time: other jobs on a shared machine stretch the
    latter. A ratio over the bound is measured again, up to ``attempts`` times, and the
    smallest kept: noise cannot turn a quadratic reader's 16x into less than 6x three times
    over; it can push a linear one's 4x past 6 once.
    """
    paths = [str(make(small)), str(make(small * factor))]
    best = float("inf")
    for _ in range(attempts):
        result = subprocess.run(
            [sys.executable, "-c", _TIMER, mode, "3", *paths], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-2000:]
        small_time, large_time = (float(line) for line in result.stdout.split())
        best = min(best, large_time / small_time)
        print(f"{Path(paths[1]).name} / {Path(paths[0]).name}: {large_time:.3f} s / {small_time:.3f} s CPU")
        if best < MAX_RATIO:
            break
    return best


def padded_keras(directory: Path, extra_layers: int) -> Path:
    """seed.keras whose config.json also declares ``extra_layers`` Dense layers the h5 lacks."""
    path = directory / f"padded_{extra_layers}.keras"
    if path.exists():
        return path
    source = zipfile.ZipFile(SAMPLES / "seed.keras")
    config = json.loads(source.read("config.json"))
    config["config"]["layers"] += [
        {
            "module": "keras.layers",
            "class_name": "Dense",
            "registered_name": None,
            "config": {"name": f"pad_{i}", "units": 2, "trainable": True},
            "build_config": {"input_shape": [None, 2]},
            "inbound_nodes": [
                {
                    "args": [
                        {
                            "class_name": "__keras_tensor__",
                            "config": {
                                "shape": [None, 2],
                                "dtype": "float32",
                                "keras_history": [f"pad_{i - 1}" if i else "dense1", 0, 0],
                            },
                        }
                    ],
                    "kwargs": {},
                }
            ],
        }
        for i in range(extra_layers)
    ]
    with zipfile.ZipFile(path, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, json.dumps(config) if name == "config.json" else source.read(name))
    return path


def test_declared_layers_cost_is_linear(tmp_path):
    ratio = _ratio(lambda n: padded_keras(tmp_path, n), 10_000)
    assert ratio < MAX_RATIO, f"40k/10k declared layers took {ratio:.1f}x"


def test_fifty_thousand_declared_layers_scan_well_inside_the_read_limit(tmp_path):
    """An earlier, quadratic reader took 31 s here; a 20 s read limit would then have fired."""
    path = padded_keras(tmp_path, 50_000)
    result = subprocess.run(
        [sys.executable, "-m", "decay_audit.cli", "scan", str(path), "--format", "json", "--limit", "read-seconds=20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)["result"]
    assert {v["path"] for v in document["variables"]} >= {"dense1/kernel", "dense1/bias"}


def _wide_export(directory: Path, variables: int) -> Path:
    path = directory / f"wide_{variables}"
    if not path.exists():
        path.mkdir()
        graph, metadata = wide_saved_model(variables)
        (path / "saved_model.pb").write_bytes(graph)
        (path / "keras_metadata.pb").write_bytes(metadata)
    return path


def test_saved_model_cost_is_linear_in_nodes_functions_and_metadata(tmp_path):
    inventory = load(_wide_export(tmp_path, 3), IN_PROCESS)
    assert [r.layer_class for r in inventory.records] == ["Dense"] * 3  # metadata resolved
    assert all(r.graph_uses == ("MatMul:1",) for r in inventory.records)  # graph walked
    ratio = _ratio(lambda n: _wide_export(tmp_path, n), 2_500)
    assert ratio < MAX_RATIO, f"10k/2.5k variables took {ratio:.1f}x"


def _one_function_captures(directory: Path, variables: int) -> Path:
    """One function captures every variable and forwards all of them to a callee: the
    re-walk per gained argument made this quadratic."""
    path = directory / f"captures_{variables}"
    if path.exists():
        return path
    path.mkdir()
    nodes = [Node(children=[(i + 1, f"v{i}") for i in range(variables)])]
    nodes += [Node(kind="variable", name=f"layer_{i}/kernel:0") for i in range(variables)]
    args = [f"a{i}" for i in range(variables)]
    outer = Function("outer", ["x"] + args, [("call", "StatefulPartitionedCall", ["x"] + args, "inner")])
    inner = Function(
        "inner",
        ["x"] + args,
        [(f"r{i}", "ReadVariableOp", [f"a{i}"], None) for i in range(variables)]
        + [(f"m{i}", "MatMul", ["x", f"r{i}:value:0"], None) for i in range(variables)],
    )
    (path / "saved_model.pb").write_bytes(saved_model(nodes, [outer, inner], {"outer": list(range(1, variables + 1))}))
    return path


def test_function_capturing_every_variable_is_linear(tmp_path):
    inventory = load(_one_function_captures(tmp_path, 4), IN_PROCESS)
    assert all(r.graph_uses == ("MatMul:1",) for r in inventory.records)
    ratio = _ratio(lambda n: _one_function_captures(tmp_path, n), 1_500)
    assert ratio < MAX_RATIO, f"6k/1.5k captured variables took {ratio:.1f}x"


def test_metadata_paths_through_one_wide_node_are_linear(tmp_path):
    def make(count: int) -> Path:
        path = tmp_path / f"meta_{count}"
        if not path.exists():
            path.mkdir()
            nodes = [
                Node(children=[(1, "v")] + [(0, f"layer-{i}") for i in range(count)]),
                Node(kind="variable", name="v:0"),
            ]
            (path / "saved_model.pb").write_bytes(saved_model(nodes))
            (path / "keras_metadata.pb").write_bytes(
                keras_metadata([(f"root.layer-{i}", '{"class_name": "Dense"}') for i in range(count)])
            )
        return path

    ratio = _ratio(make, 5_000)
    assert ratio < MAX_RATIO, f"20k/5k metadata paths took {ratio:.1f}x"


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights")

    def make(layers: int) -> Path:
        path = directory / f"w{layers}.weights.h5"
        if not path.exists():
            with h5py.File(path, "w") as handle:
                for index in range(layers):
                    group = handle.create_group(f"layers/dense_{index}/vars" if index else "layers/dense/vars")
                    group.create_dataset("0", shape=(2, 2), dtype="f4")
                    group.create_dataset("1", shape=(2,), dtype="f4")
        return path

    return make


def test_variables_cost_is_linear_through_classification(weights_files):
    """Reading, classifying and applying the policy: 4,800 against 1,200 variables."""
    ratio = _ratio(weights_files, 600, mode="scan")
    assert ratio < MAX_RATIO, f"4.8k/1.2k variables took {ratio:.1f}x"


def test_declared_layer_names_are_bounded_by_the_objects_limit(tmp_path):
    """A legacy h5 may declare any number of layer_names (dense attribute storage has no 64 KiB
    cap); each costs an h5 lookup even when missing, so they count against --limit objects."""
    path = tmp_path / "names.h5"
    with h5py.File(path, "w", libver="latest") as handle:
        handle.create_group("model_weights").attrs.create(
            "layer_names", np.array([f"missing_{i}".encode() for i in range(5_000)], dtype="S16")
        )
    result = subprocess.run(
        [sys.executable, "-m", "decay_audit.cli", "scan", str(path), "--limit", "objects=1000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "objects 5000 exceeds the limit 1000" in result.stderr, result.stderr


def _walked_depth(value) -> int:
    """Containers nested in containers (a scalar adds nothing)."""
    if not isinstance(value, (dict, list)):
        return 0
    return 1 + max((_walked_depth(v) for v in (value.values() if isinstance(value, dict) else value)), default=0)


_TRICKY_TEXT = st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=8)
_JSON_VALUES = st.recursive(
    st.none() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_JSON_VALUES, st.sampled_from(["utf-8", "utf-16", "str"]), st.booleans())
def test_depth_counted_on_the_text_equals_the_depth_of_the_parsed_value(value, encoding, ascii_only):
    """The bound is counted on the JSON text (brackets outside strings): strings full of
    brackets, quotes and backslashes, any encoding json.loads accepts, must not fool it."""
    from decay_audit.loaders.interface import _depth

    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _depth(text if encoding == "str" else text.encode(encoding)) == max(1, _walked_depth(value))


def test_a_graph_walk_cut_by_its_step_budget_says_so(tmp_path):
    """Every captured argument feeds one hub node that 400 ops consume: following each argument
    costs 400 steps, past the budget (linear in the edges). The walk stops and a note says
    which evidence may be missing, instead of dropping it silently."""
    count = 400
    path = tmp_path / "hub"
    path.mkdir()
    nodes = [Node(children=[(i + 1, f"v{i}") for i in range(count)])]
    nodes += [Node(kind="variable", name=f"layer_{i}/kernel:0") for i in range(count)]
    args = [f"a{i}" for i in range(count)]
    hub = Function(
        "hub", args, [("h", "IdentityN", args, None)] + [(f"c{j}", "AddN", ["h"], None) for j in range(count)]
    )
    (path / "saved_model.pb").write_bytes(saved_model(nodes, [hub], {"hub": list(range(1, count + 1))}))
    inventory = load(path, IN_PROCESS)
    assert len(inventory.records) == count
    assert any("step budget" in note and "not followed" in note for note in inventory.notes), inventory.notes
    finished = load(_one_function_captures(tmp_path, 4), IN_PROCESS)
    assert not any("step budget" in note for note in finished.notes)
