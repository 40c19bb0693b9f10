"""TADT: the Task-Aware Dynamic Transformer and its Baseline backbone (paper section 3).

Registered as extractors ``baseline`` and ``tadt``; see ``tadt/README.md``
for every choice the paper left open.
"""
