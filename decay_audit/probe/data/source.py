"""One ``(x, y)`` per probe step, whichever way the set-up provides it: its own ``batch`` or
``dataset`` (read as Keras' ``fit`` reads it), or synthetic batches drawn from the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from decay_audit.probe.data.inputs import InputPlan, plan_inputs
from decay_audit.probe.data.signature import own_loss_labels, signature_inputs
from decay_audit.probe.data.targets import TargetPlan, plan_targets
from decay_audit.probe.setup import SetupError, Stage, TrainingSetup, at_stage


def _split(element: Any) -> tuple[Any, Any]:
    """An element as Keras' ``fit`` reads it (``keras.utils.unpack_x_y_sample_weight``): a tuple or list
    of 1-3 is ``(x[, y[, sample_weight]])``, anything else is ``x`` alone. Sample weights scale the loss,
    not which variables decay, so they are dropped."""
    import keras

    x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
    return x, y


def _is_stream(data: Any) -> bool:
    if isinstance(data, (tuple, list, dict, np.ndarray)) or hasattr(data, "shape"):
        return False
    return (
        hasattr(data, "element_spec")
        or hasattr(data, "__next__")
        or (hasattr(data, "__getitem__") and hasattr(data, "__len__"))
        or hasattr(data, "__iter__")
    )


class BatchSource:
    """One ``(x, y)`` per probe step, from the set-up's own data or synthetic.

    A finite dataset or iterator is read from the start again when it runs out (a
    generator cannot be, so it must yield as many batches as there are steps).
    """

    def __init__(self, setup: TrainingSetup, batch_size: int = 4, rng: np.random.Generator | None = None):
        self.setup = setup
        self.batch_size = batch_size
        self.rng = rng or np.random.default_rng(0)
        self.subject = setup.description or str(getattr(setup.model, "name", "model"))
        self._plan: TargetPlan | None = None
        self._inputs: InputPlan | None = None
        self._iterator: Iterator[Any] | None = None
        self._index = 0
        self._peeked: tuple[Any, Any] | None = None

    def __iter__(self) -> BatchSource:
        return self

    def __next__(self) -> tuple[Any, Any]:
        return self.next()

    def peek(self) -> tuple[Any, Any]:
        """The next batch without consuming it (verify builds an unbuilt model with it)."""
        if self._peeked is None:
            self._peeked = self.next()
        return self._peeked

    def next(self) -> tuple[Any, Any]:
        if self._peeked is not None:
            batch, self._peeked = self._peeked, None
            return batch
        with at_stage(Stage.BATCH, self.subject):
            data = self.setup.batch
            if data is None:
                x = signature_inputs(self.setup.model, self.batch_size, self.rng)
                if x is not None:  # tf_keras without model.inputs: transformers, subclassed
                    y = own_loss_labels(self.setup.model, x, self.rng)
                    return x, (self._targets(x) if y is None else y)
                if self._inputs is None:
                    self._inputs = plan_inputs(self.setup.model)
                x, y = self._inputs.draw(self.batch_size, self.rng), None
            else:
                x, y = _split(self._next_element(data) if _is_stream(data) else data)
                x, y = self._preprocessed(x, y)
            if y is None:
                y = self._targets(x)
            return x, y

    def _preprocessed(self, x: Any, y: Any) -> tuple[Any, Any]:
        """keras_hub task models (``PipelineModel``) run ``preprocess_samples`` on every batch in ``fit``
        (keras_hub 0.32 ``utils/pipeline_model.py``): raw text becomes token ids there, so a set-up's
        own batch of strings goes through it here too. A task with ``preprocessor=None`` passes it on."""
        model = self.setup.model
        if getattr(model, "preprocessor", None) is None or not callable(getattr(model, "preprocess_samples", None)):
            return x, y
        import keras

        packed = model.preprocess_samples(x, y)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(packed)
        return x, y

    def _next_element(self, data: Any) -> Any:
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not hasattr(data, "element_spec"):
            if len(data) == 0:
                raise SetupError(self.subject, "the set-up's dataset holds no batches", Stage.BATCH)
            element = data[self._index % len(data)]
            self._index += 1
            return element
        if self._iterator is None:
            self._iterator = iter(data)
        try:
            return next(self._iterator)
        except StopIteration:
            restarted = iter(data)
            if restarted is self._iterator:  # a generator or iterator: it cannot start over
                raise SetupError(
                    self.subject, "the set-up's iterator ran out: it must yield one batch per probe step", Stage.BATCH
                ) from None
            self._iterator = restarted
        try:
            return next(self._iterator)
        except StopIteration:
            raise SetupError(self.subject, "the set-up's dataset yields no batches", Stage.BATCH) from None

    def _targets(self, x: Any) -> Any:
        if self._plan is None:
            y_pred = self.setup.model(x, training=False)
            self._plan = plan_targets(self.setup.model, x, y_pred, self.setup.data_loss, self.rng)
        return self._plan.draw(self.rng)
