"""Real keras.applications architectures (random weights, small inputs): every variable found,
the metadata inventory equal to Keras' own, and every decision right under the default policy."""

from __future__ import annotations

import keras
import pytest

from decay_audit import load, scan
from decay_audit.knowledge.keras import LAYER_VARIABLES

KERNEL_LEAVES = {"kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel"}

ARCHITECTURES = {
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10
    ),
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10),
    "convnext_tiny": lambda: keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=10),
}


def _expected_decay(model) -> dict[str, bool]:
    """Ground truth from the live model: decay exactly the trainable kernels."""
    return {w.path: (w.name in KERNEL_LEAVES and w.trainable) for w in model.weights}


@pytest.fixture(
    scope="module",
    params=[
        "mobilenet_v2",
        pytest.param("efficientnet_b0", marks=pytest.mark.slow),
        pytest.param("convnext_tiny", marks=pytest.mark.slow),
    ],
)
def saved_architecture(request, tmp_path_factory):
    model = ARCHITECTURES[request.param]()
    directory = tmp_path_factory.mktemp(request.param)
    keras_path = directory / "model.keras"
    model.save(keras_path)
    export_path = directory / "export"
    model.export(str(export_path), verbose=False)
    return request.param, model, keras_path, export_path


def test_keras_file_matches_keras_and_decides_right(saved_architecture):
    name, model, keras_path, _ = saved_architecture
    report = scan(keras_path)
    rebuilt = keras.saving.load_model(keras_path)
    built = load(rebuilt)
    assert len(report.variables) == len(model.weights)
    # Classes in decay-audit's layer table; keras.applications' own LayerScale is not in it and
    # gets auto-numbered variable names (``variable_18``) that differ from build to build.
    custom_free = [r for r in built.records if r.layer_class in LAYER_VARIABLES]
    fast = {v.record.path: v.record for v in report.variables}
    for record in custom_free:
        assert record.path in fast, record.path
        got = fast[record.path]
        assert (got.leaf, got.shape, got.trainable, got.layer_class) == (
            record.leaf,
            record.shape,
            record.trainable,
            record.layer_class,
        )
    expected = _expected_decay(rebuilt)
    decided = {v.record.path: v.decision.decay for v in report.variables}
    for record in built.records:
        if record.path in decided:
            assert decided[record.path] == expected[record.path], record.path
    # LayerScale (ConvNeXt) is a keras.applications class the table does not list: judged by name.
    assert report.summary().low_confidence == 0


def test_savedmodel_export_decides_like_the_live_model(saved_architecture):
    name, model, _, export_path = saved_architecture
    report = scan(export_path)
    assert len(report.variables) == len(model.weights)
    expected = _expected_decay(model)
    decided = {v.record.path: v.decision.decay for v in report.variables}
    assert decided == expected
