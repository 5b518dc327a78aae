"""Parts of ``tools/generate_keras_hub_table.py``: the reviewed kinds, the source reader, the renderer."""
