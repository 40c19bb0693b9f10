"""Token-wise layers of the attention extractors run a piece at a time without autograd.

``extractors.blocks.inference_pieces`` splits the transformer MLP's tokens and
SwinIR's attention windows into pieces of at most ``INFERENCE_TOKENS`` tokens (CPU)
when no gradient is recorded, so that a large image's transient activations are
held a piece at a time. Each token (MLP) or window (attention) is computed alone,
so the output must equal the one-call output within float rounding, with the
pieces really taken, for every extractor built on these blocks.
"""
from __future__ import annotations

import pytest
import torch

import extractors.blocks as blocks
import extractors.swinir as swinir
from extractors import create_extractor
from harness.config import DEFAULT_CONFIG, extractor_args, load_config

EXTRACTORS = ["swinir", "baseline", "cat-r-2"]  # the attention extractors built on these blocks


@pytest.fixture(scope="module")
def embedded():
    """The embedded default's configuration: its small widths of every extractor."""
    return load_config(DEFAULT_CONFIG)


def _count(monkeypatch, cls, name):
    calls = []
    real = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    return calls


@pytest.mark.parametrize("name", EXTRACTORS)
def test_pieces_equal_one_call(monkeypatch, embedded, name):
    torch.manual_seed(3)
    model = create_extractor(name, **extractor_args(embedded, name)).eval()
    x = torch.rand(2, 3, 20, 27) * 2 - 1  # padded to windows; several pieces per layer below
    with torch.no_grad():
        whole = model(x, scale=2.0)
        monkeypatch.setattr(blocks, "INFERENCE_TOKENS", 100)
        mlp_calls = _count(monkeypatch, blocks.Mlp, "_forward")
        attn_calls = _count(monkeypatch, swinir.WindowAttention, "_attend")
        pieces = model(x, scale=2.0)
    n_mlp = sum(isinstance(m, blocks.Mlp) for m in model.modules())
    assert len(mlp_calls) > n_mlp  # each MLP ran in several pieces
    if name == "swinir":
        n_attn = sum(isinstance(m, swinir.WindowAttention) for m in model.modules())
        assert len(attn_calls) > n_attn
    assert torch.allclose(pieces, whole, atol=1e-5 * whole.abs().max().item(), rtol=0)


def test_pieces_only_without_autograd_and_when_large():
    assert blocks.inference_pieces(10**6, 1) is None  # autograd on (training): one call
    with torch.no_grad():
        assert blocks.inference_pieces(10**6, 1) is not None
        assert blocks.inference_pieces(blocks.INFERENCE_TOKENS, 1) is None  # small: one call
        pieces = blocks.inference_pieces(1000, 64 * 2)  # windows of 64 tokens, batch of 2
        assert blocks.inference_pieces(10**6, 1, "cuda") is None  # GPUs: one call
    assert pieces[0] == slice(0, blocks.INFERENCE_TOKENS // 128)
    assert sum(p.stop - p.start for p in pieces) == 1000 and pieces[-1].stop == 1000
