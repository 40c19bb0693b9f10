"""Every registered model, through the same checks (timm's one parametrised test).

Parametrised over the registries themselves, so an extractor or upsampler added
to `extractors.MODULES` / `upsamplers.MODULES` is covered with nothing else to
edit, at the embedded default's widths (config/default.yaml), which every
registered extractor and upsampler must therefore have.
"""
from __future__ import annotations

import pytest
import torch

from extractors import create_extractor, extractor_names
from harness.config import ROOT, extractor_args, load_config, pair_extractors, pair_upsamplers
from upsamplers import create_model, upsampler_names

CFG = load_config()


def test_every_registered_model_has_embedded_widths_and_is_paired_somewhere():
    assert sorted(CFG["extractors"]) == sorted(extractor_names())
    assert sorted(CFG["upsamplers"]) == sorted(upsampler_names())
    everything = load_config(ROOT / "config" / "embedded-all.yaml")
    assert sorted(pair_extractors(everything)) == sorted(extractor_names())
    paper = load_config(ROOT / "config" / "paper.yaml")
    assert sorted(pair_extractors(paper)) == sorted(extractor_names())
    assert sorted(pair_upsamplers(CFG)) == sorted(upsampler_names())


@pytest.mark.parametrize("name", extractor_names())
def test_extractor_contract_at_embedded_widths(name):
    assert name in CFG["extractors"], f"config/default.yaml has no embedded widths for {name}"
    torch.manual_seed(0)
    enc = create_extractor(name, **extractor_args(CFG, name)).eval()
    assert isinstance(enc.out_dim, int) and isinstance(enc.scale_aware, bool)
    assert enc.window_size is None or isinstance(enc.window_size, int)
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        y = enc(x, scale=torch.tensor([2.5]))
    assert y.shape == (1, enc.out_dim, 37, 53) and torch.isfinite(y).all()
    twin = create_extractor(name, **extractor_args(CFG, name)).eval()
    twin.load_state_dict(enc.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(twin(x, scale=torch.tensor([2.5])), y)


@pytest.mark.parametrize("upsampler", upsampler_names())
@pytest.mark.parametrize("name", extractor_names())
def test_every_pair_decodes_odd_sizes(name, upsampler):
    torch.manual_seed(0)
    model = create_model(upsampler, name, extractor_args=extractor_args(CFG, name),
                         upsampler_args=CFG["upsamplers"].get(upsampler) or {}).eval()
    inp = torch.randn(1, 3, 37, 53)
    h, w = 93, 133  # x2.5 of 37 x 53, rounded
    ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h), torch.linspace(-1 + 1 / w, 1 - 1 / w, w),
                            indexing="ij")
    coord = torch.stack([ys, xs], -1).view(1, -1, 2)
    cell = torch.tensor([2 / h, 2 / w]).expand(1, h * w, 2)
    with torch.no_grad():
        rgb = model.predict(inp, coord, cell, 2.5, chunk=5000)
    assert rgb.shape == (1, h * w, 3) and torch.isfinite(rgb).all()
