"""The twin-step loop over a probe backend (the same measurement as twin.py's, framework-neutral).

Per step, from one snapshot of every model and optimizer variable: the real step (A);
the reference with every decay source off (B); for a model's own step, the step with
the decoupled sources off (C), so ``A - C`` is decoupled and ``C - B`` coupled decay. A
hand-written step cannot be re-run with the optimizer's decay off, so its decoupled
part is the optimizer alone under zero gradients, decay on vs off. On a GPU the real step
is repeated from the same snapshot: kernels are not bit-reproducible even with the
backend's determinism switched on where it exists, and the difference of the two runs
(not only float rounding) is the floor below which nothing counts as decay.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from decay_audit.probe.backends.common import SourceKind


def run_backend_probe(backend: Any, setup: Any, steps: int, batch_size: int, seed: int,
                      device: str | None) -> Any:
    from decay_audit.probe.data import synthetic_batch
    from decay_audit.probe.twin import ProbeRun, StepDelta, _noise

    backend.prepare(setup)
    trainables = backend.trainable(setup)
    variables = [t.variable for t in trainables]
    everything = backend.state_variables(setup)
    original = backend.read(everything)
    sources = backend.decay_sources(setup)
    decoupled_sources = [s for s in sources if s.kind is SourceKind.DECOUPLED]
    device_name = backend.device(device)
    repeat = device_name != "CPU"
    factor, _ = backend.decay_factor(setup.optimizer)
    rng = np.random.default_rng(seed)
    hand_written = setup.train_step is not None

    def values() -> list[np.ndarray]:
        return [v.astype(np.float64) for v in backend.read(variables)]

    measured = []
    try:
        with backend.determinism(), backend.placement(device_name):
            for variable, value in zip(variables, backend.read(variables)):
                if value.size and not np.any(value):  # decay cannot move a zero
                    backend.write([variable], [rng.normal(0.0, 0.02, size=value.shape).astype(value.dtype)])
            for _ in range(steps):
                batch = (backend.batch(setup, batch_size, rng) if hasattr(backend, "batch")
                         else synthetic_batch(setup.model, batch_size, rng))
                start = backend.read(everything)
                before = values()
                rate = backend.learning_rate(setup.optimizer) * factor
                backend.step(setup, batch, [])
                real = values()
                after_real = backend.read(everything)
                floor = [0.0] * len(variables)
                if repeat:
                    backend.write(everything, start)
                    backend.step(setup, batch, [])
                    floor = [4.0 * float(np.max(np.abs(r - a), initial=0.0)) for r, a in zip(real, values())]
                backend.write(everything, start)
                backend.step(setup, batch, sources)
                reference = values()
                backend.write(everything, start)
                if not hand_written:
                    backend.step(setup, batch, decoupled_sources)
                    no_decoupled = values()
                    decoupled = [r - n for r, n in zip(real, no_decoupled)]
                    coupled = [n - b for n, b in zip(no_decoupled, reference)]
                else:
                    backend.zero_gradient_step(setup, [])
                    with_decay = values()
                    backend.write(everything, start)
                    backend.zero_gradient_step(setup, decoupled_sources)
                    without_decay = values()
                    decoupled = [w - o for w, o in zip(with_decay, without_decay)]
                    coupled = [(r - b) - d for r, b, d in zip(real, reference, decoupled)]
                dtypes = [np.asarray(v).dtype for v in backend.read(variables)]
                measured.append(tuple(
                    StepDelta(d, c, w, rate if np.isfinite(rate) else 0.0,
                              max(_noise(w, r, dtype=t), f))
                    for d, c, w, r, t, f in zip(decoupled, coupled, before, real, dtypes, floor)))
                backend.write(everything, after_real)
    finally:
        backend.write(everything, original)
    optimizer = setup.optimizer
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return ProbeRun(
        paths=tuple(t.path for t in trainables),
        steps=tuple(measured),
        optimizer_name=type(optimizer).__name__ + (f"({type(inner).__name__})" if inner is not optimizer else ""),
        weight_decay=(factor if factor and np.isfinite(factor) else None),
        device=device_name,
        hand_written_step=hand_written,
        backend=f"{backend.name} ({backend.framework()})",
        decay_sources=tuple(s.name for s in decoupled_sources),
    )
