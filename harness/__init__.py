"""Reproduction harness for TADT and arbitrary-scale super-resolution.

Driven as ``python -m harness VERB``; see ``python -m harness --help``.
This package holds everything that is not a model: data, degradations,
training, evaluation, FLOPs, checkpoints, tables and figures.
"""
