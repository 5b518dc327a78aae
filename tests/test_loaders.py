"""Every format yields the same variables, kinds and decisions; the metadata path matches the build path."""

from __future__ import annotations

import builders
import keras
import pytest

from decay_audit import load, scan
from decay_audit.errors import ModelLoadError

IDENTITY_FIELDS = ("path", "leaf", "layer", "layer_class", "shape", "dtype", "trainable")


def _identity(inventory):
    return {r.path: tuple(getattr(r, f) for f in IDENTITY_FIELDS) for r in inventory.records}


def _verdicts(report, strip_prefix: str = ""):
    """path (model-name prefix and Bidirectional scope removed) → (kind, decay)."""
    result = {}
    for v in report.variables:
        path = v.record.path.removeprefix(strip_prefix).replace("bigru/", "")
        result[path] = (v.classification.kind.value, v.decision.decay)
    return result


CUSTOM_LAYERS = ("block_layer_scale/", "custom_norm/")


def test_keras_zip_metadata_path_equals_build_path(zoo):
    model, paths = zoo
    fast = _identity(load(paths["keras"]))
    rebuilt = keras.saving.load_model(paths["keras"])  # the sample's classes are registered in this process
    built = _identity(load(rebuilt))
    builtin_fast = {p: i for p, i in fast.items() if not p.startswith(CUSTOM_LAYERS)}
    builtin_built = {p: i for p, i in built.items() if not p.startswith(CUSTOM_LAYERS)}
    assert builtin_fast == builtin_built
    # Custom classes are never imported by a scan, so their leaves are positional there;
    # everything else about them must still agree.
    for prefix in CUSTOM_LAYERS:
        fast_custom = [i[2:] for p, i in fast.items() if p.startswith(prefix)]
        built_custom = [i[2:] for p, i in built.items() if p.startswith(prefix)]
        assert fast_custom == built_custom and fast_custom


def test_count_equals_model_weights_for_every_format(zoo):
    model, paths = zoo
    for fmt in ("keras", "h5", "weights_h5", "export", "tf_saved"):
        assert len(load(paths[fmt])) == len(model.weights), fmt


@pytest.mark.parametrize("fmt", ["keras", "h5", "export", "tf_saved", "weights_h5"])
def test_zoo_kinds_and_decisions_in_every_format(zoo, fmt):
    model, paths = zoo
    verdicts = _verdicts(scan(paths[fmt]), strip_prefix="zoo/")
    expected = dict(builders.ZOO_EXPECTED)
    # Custom-class variables have generic or positional leaves in some formats; compare by layer.
    for path, verdict in expected.items():
        layer, leaf = path.rsplit("/", 1)
        candidates = [
            p
            for p in verdicts
            if p == path or (p.rsplit("/", 1)[0] == layer and layer in ("block_layer_scale", "custom_norm"))
        ]
        assert candidates, f"{fmt}: {path} missing from {sorted(verdicts)}"
        assert verdicts[candidates[0]] == verdict, f"{fmt}: {path}"
    assert len(verdicts) == len(expected)


def test_live_model_matches_file(zoo):
    model, paths = zoo
    live = scan(model)
    assert len(live.variables) == len(model.weights)
    by_path = {v.record.path: v for v in live.variables}
    assert by_path["mha/query/bias"].classification.kind.value == "bias"
    assert by_path["block_layer_scale/variable"].classification.kind.value == "scale"
    assert by_path["custom_norm/scale"].classification.kind.value == "norm"


def test_seed_paths_and_formats(seed):
    model, paths = seed
    expected = {"dense1/kernel": True, "dense1/bias": False, "dense2/kernel": True, "dense2/bias": False}
    for fmt in ("keras", "h5", "weights_h5", "export", "tf_saved"):
        report = scan(paths[fmt])
        assert {v.record.path: v.decision.decay for v in report.variables} == expected, fmt


def test_tf_keras_savedmodel_and_h5(tf_keras_files):
    model, paths = tf_keras_files
    names = {w.name.removesuffix(":0") for w in model.weights}
    for fmt, loader in (("saved_model", "saved-model"), ("h5", "legacy-h5")):
        report = scan(paths[fmt])
        assert report.loader == loader
        assert {v.record.path for v in report.variables} == names
        by_path = report.by_path()
        assert by_path["LayerNorm/gamma"].classification.kind.value == "norm"
        assert by_path["lstm/lstm_cell/recurrent_kernel"].decision.decay is True
        assert by_path["bn/moving_mean"].record.trainable is False
        assert by_path["embedding/embeddings"].decision.decay is False
        assert by_path["dense2/kernel"].classification.confidence.value == "high"


def test_plain_tf_module_savedmodel_uses_graph_evidence(tf_module_dir):
    module, directory = tf_module_dir
    report = scan(directory)
    verdicts = {v.record.path: (v.classification.kind.value, v.decision.decay) for v in report.variables}
    assert verdicts == builders.MODULE_EXPECTED
    table = report.by_path()["table"]
    assert any("gather" in e for e in table.classification.evidence)
    live = scan(module)
    assert {v.record.path: (v.classification.kind.value, v.decision.decay) for v in live.variables} == {
        **builders.MODULE_EXPECTED
    }


def test_subclassed_model_scans_without_its_class(tmp_path):
    model = builders.subclassed_model()
    path = tmp_path / "sub.keras"
    model.save(path)
    report = scan(path)
    assert len(report.variables) == len(model.weights)
    paths = {v.record.path for v in report.variables}
    assert {w.path for w in model.weights if "layer_normalization" not in w.path} <= paths | {
        p.replace("var_0", "kernel").replace("var_1", "bias") for p in paths
    }
    decayed = sorted(v.record.shape for v in report.variables if v.decision.decay)
    assert decayed == sorted(tuple(w.shape) for w in model.weights if w.name == "kernel")


def test_directory_with_exactly_one_model(seed, tmp_path):
    import shutil

    _, paths = seed
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(paths["keras"], single / "model.keras")
    assert len(load(single)) == 4
    shutil.copy(paths["h5"], single / "other.h5")
    with pytest.raises(ModelLoadError, match="exactly one model, found 2"):
        load(single)


def test_dataframe_has_one_row_per_variable(seed):
    _, paths = seed
    frame = scan(paths["keras"]).to_dataframe()
    assert list(frame["path"]) == ["dense1/kernel", "dense1/bias", "dense2/kernel", "dense2/bias"]
    assert frame["decay"].tolist() == [True, False, True, False]


def test_unknown_public_keras_class_is_built_to_learn_its_order(tmp_path):
    """STFTSpectrogram is not in the layer table: the scan builds it (Keras' own code,
    safe_mode) in its reader process, and says so."""
    from conftest import run_cli

    inputs = keras.Input((64, 1))
    outputs = keras.layers.STFTSpectrogram(frame_length=16, frame_step=8, fft_length=16, trainable=True, name="stft")(
        inputs
    )
    path = tmp_path / "stft.keras"
    keras.Model(inputs, outputs).save(path)
    result = run_cli("scan", str(path), "--format", "json")
    assert result.returncode == 0 and result.stderr == ""
    document = __import__("json").loads(result.stdout)["result"]
    assert any("STFTSpectrogram is not in decay-audit's table" in n for n in document["notes"])
    assert [v["path"] for v in document["variables"]] == ["stft/real_kernel", "stft/imag_kernel"]
