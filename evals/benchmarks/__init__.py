"""One benchmark per file; :mod:`evals.registry` maps registry names to these modules.

:mod:`evals.benchmarks.base` holds the declarative :class:`~evals.benchmarks.base.Benchmark` and
:mod:`evals.benchmarks.prompts` the shared prompt pieces.
"""
