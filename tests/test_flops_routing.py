"""TADT's GFLOPs are counted along the routing evaluation ran, image by image.

Evaluation decides TADT's routing on the LR image as it feeds the model
(normalised, mirror-padded to the window, before tiling); the FLOPs verb must
count exactly that path, or Table 3/5 would pair the PSNR of one path with
the GFLOPs of another. This test runs both on the same images and scales (with
sizes where the padding adds a whole window, and tiles), with a random-weight
TADT at the embedded widths, and compares the recorded bits and the counts.
"""
from __future__ import annotations

import csv
import json

import pytest
import torch

from harness import flops as FL
from harness.checkpoint import load_model, save_checkpoint
from harness.cli import main
from harness.config import extractor_args, load_config
from harness.evaluate import evaluate_rows, output_size
from harness.protocol import normalize
from upsamplers import create_model

# LR sizes: 32 and 48 are multiples of the embedded window (16), so evaluation
# pads them by a whole window; the others by 1..15 pixels.
SIZES = [(24, 40), (32, 33), (20, 20), (20, 48), (37, 29)]
SCALES = (2, 3, 4.5, 12)
DATASET = "div2k-valid"


def _lr(i: int, h: int, w: int) -> torch.Tensor:
    """Bright towards the bottom/right, so the mirrored border changes what the TARC pools."""
    c = torch.rand(3, 1, 1, generator=torch.Generator().manual_seed(i))
    yy = torch.linspace(0, 1, h)[:, None] ** 4
    xx = torch.linspace(0, 1, w)[None, :] ** 4
    return (c * yy + (1 - c) * xx).clamp(0, 1)


def _pairs(data_cfg, dataset, scale, max_images=0):   # harness.data.eval_pairs' signature
    assert dataset == DATASET and not max_images
    for i, (h, w) in enumerate(SIZES):
        H, W = output_size(h, w, scale)
        yield f"img{i}", _lr(i, h, w), torch.rand(3, H, W, generator=torch.Generator().manual_seed(100 + i))


def _unpadded_routing(enc, lr, scale) -> str:
    """The routing of the old FLOPs path: the TARC on the unpadded LR image."""
    return FL.decide_routing(enc, normalize(lr), scale)


@pytest.fixture(scope="module")
def tadt_checkpoint(tmp_path_factory):
    """A random-weight TADT-LIIF at the embedded widths whose TARC routes some of
    the test images differently with and without evaluation's padding (so the
    test below can tell the two paths apart)."""
    cfg = load_config()
    spec = {"upsampler": "liif", "extractor": "tadt", "extractor_args": extractor_args(cfg, "tadt"),
            "upsampler_args": dict(cfg["upsamplers"]["liif"])}
    from harness.evaluate import evaluation_routing

    for seed in range(20):
        torch.manual_seed(seed)
        model = create_model("liif", "tadt", spec["extractor_args"], spec["upsampler_args"]).eval()
        with torch.no_grad():  # sharper logits: small changes of the pooled features move the top-k
            model.encoder.tarc.image_branch[-1].weight.mul_(20)
        enc = model.encoder
        differs = sum(
            FL.canonical_routing(enc, evaluation_routing(enc, lr, s).r) != _unpadded_routing(enc, lr, s)
            for s in SCALES for _, lr, _ in _pairs(None, DATASET, s))
        if differs:
            return save_checkpoint(tmp_path_factory.mktemp("tadt") / "tadt-liif.pth", model, spec, step=1)
    pytest.fail("no seed gives a TARC whose routing depends on the padding; the test could not fail")


def test_flops_count_the_routing_evaluation_ran(tadt_checkpoint, tmp_path, monkeypatch, capsys):
    import harness.data

    monkeypatch.setattr(harness.data, "eval_pairs", _pairs)
    model, _ = load_model(tadt_checkpoint)
    enc = model.encoder
    evals = list(evaluate_rows(model, {}, DATASET, SCALES, "tadt-liif", tile=16))
    out = tmp_path / "flops.csv"
    assert main(["flops", "--checkpoint", str(tadt_checkpoint), "--dataset", DATASET,
                 "--scales", ",".join(str(s) for s in SCALES), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with open(out, newline="") as fh:
        flops = list(csv.DictReader(fh))
    assert len(evals) == len(flops) == len(SIZES) * len(SCALES)
    assert summary["scales"]["4.5"]["images"] == len(SIZES)

    padding_mattered = 0
    for ev, fl, (s, (name, lr, _)) in zip(evals, flops, [(s, p) for s in SCALES for p in _pairs(None, DATASET, s)]):
        h, w = lr.shape[-2:]
        assert (ev["image"], float(ev["scale"])) == (fl["image"], float(fl["scale"])) == (name, s)
        assert (int(fl["h"]), int(fl["w"])) == (h, w)
        bits = ev["routing"]
        assert len(bits) == 8 and set(bits) <= {"0", "1"}
        # the bits evaluation ran are the bits the FLOPs verb counted ...
        assert fl["routing"] == bits, (name, s)
        assert int(fl["active_branches"]) == int(ev["active_branches"]) == bits.count("1")
        # ... and the count is fvcore's direct count of the backbone along them
        direct = FL.direct_extractor_flops(enc, h, w, scale=s, routing=bits)
        assert fl["gflops"] == f"{direct / 1e9:.6f}", (name, s)
        assert FL.count_extractor(enc, h, w, scale=s, routing=bits).flops == direct
        assert float(fl["tarc_gflops"]) == pytest.approx(FL.routing_flops(enc, h, w, s) / 1e9, abs=1e-6)
        padding_mattered += bits != _unpadded_routing(enc, lr, s)
    assert padding_mattered > 0  # the unpadded decision (the old FLOPs path) would have failed above
