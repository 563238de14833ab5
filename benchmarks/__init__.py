"""mmgpd benchmarks (issue 8): each module has ``main(argv=None) -> dict`` and
runs as ``python -m benchmarks.<name> [--quick] [--out-json PATH] [--device D]``.

* :mod:`benchmarks.exactness` — IR / CBR deviations over the model zoo.
* :mod:`benchmarks.cost` — time and memory per training step, GPD vs its parts.
"""
