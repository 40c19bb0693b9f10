"""The regression guard: exact where exactness is possible, statistical where it is not.

Layers (each compares fresh values with a baseline committed under tests/regression/):

- :mod:`~harness.regression.inference` (exact): committed tiny checkpoints of every
  extractor x upsampler pair, evaluated and counted by the harness's own code;
- :mod:`~harness.regression.training` (statistical): short training statistics whose
  spread across CPUs and seeds is measured, with tolerances derived from it;
- :mod:`~harness.regression.tables`: the cells of a full embedded run's tables
  (untrained cells exactly, trained ones within a sanity band).

:mod:`~harness.regression.cells` reads, writes and compares baseline cells;
:mod:`~harness.regression.check` runs the layers for ``python -m harness
check-regression`` and tests/test_regression.py. tests/regression/README.md says
what each layer checks, the measured spreads and how to refresh a baseline.
"""
