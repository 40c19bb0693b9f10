"""Shared test set-up.

Tests run single-threaded: on a 2-core machine shared with other work, several
threads per small op make the suite many times slower, and results are
deterministic this way.
"""
import torch

torch.set_num_threads(1)
