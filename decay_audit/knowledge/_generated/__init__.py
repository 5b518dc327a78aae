"""Tables written by ``tools/generate_keras_hub_table.py``: regenerate them, never edit them by hand."""
