"""Benchmarks of the neuraflow runtime against a bare numpy/scipy reference.

Run everything and print the table::

    RAY_AUTH_MODE=disabled .venv/bin/python -m benchmarks [--quick] [--json out.json]

Modules
-------
:mod:`benchmarks.common`
    The reference workload (one definition shared by both sides).
:mod:`benchmarks.bare`
    The same computation in bare numpy/scipy, one process per core.
:mod:`benchmarks.engine`
    The same computation as a neuraflow pipeline: fused graph without Ray,
    the Ray engine in real time, one actor per device, and replay speed.
"""
