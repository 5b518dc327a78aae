"""Regenerate the committed sample models: ``python sample_models/make_samples.py``.

Writes small files (KB) in every supported format next to this script.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import builders  # noqa: E402


def main() -> None:
    import tensorflow as tf

    for stale in HERE.iterdir():
        if stale.is_dir() and stale.name != "__pycache__":
            shutil.rmtree(stale)
        elif stale.suffix in (".keras", ".h5"):
            stale.unlink()
    builders.save_all_formats(builders.seed_model(), HERE, "seed")
    zoo = builders.zoo_model()
    zoo.save(HERE / "zoo.keras")
    zoo.export(str(HERE / "zoo_export"), verbose=False)
    builders.subclassed_model().save(HERE / "subclassed.keras")
    k2 = builders.tf_keras_model()
    k2.save(str(HERE / "tf_keras_savedmodel"))
    k2.save(str(HERE / "tf_keras.h5"))
    tf.saved_model.save(builders.tf_module(), str(HERE / "tf_module_savedmodel"))
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"wrote samples to {HERE} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
