"""The commands, one module each under the name users type: ``scan``, ``scan_many``, ``rules``, ``verify``.

A stage runs the pipeline (load → classify → decide → rules or probe) and returns a record
from :mod:`decay_audit.results`; it never formats output. The CLI and the Python API call
the same functions.
"""
