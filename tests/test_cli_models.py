"""The ``models`` and ``flops`` verbs, run in-process through ``harness.cli.main``."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from harness.cli import main

# Parameter counts of the paper's configurations (reference definitions; the
# upsamplers' own decoder parameters around a 64-channel extractor).
EXPECTED_PARAMS = {
    "extractors": {"edsr-baseline": 1_220_440, "rdn": 21_973_952, "swinir": 11_603_044, "rcan": 15_295_224},
    "upsamplers": {"liif": 346_883, "lte": 493_827, "metasr": 445_120},
}
TADT_SMALL = json.dumps({"embed_dim": 32, "num_groups": 2})


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_has_the_reference_parameter_counts(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    counts = json.loads(out)
    for family, expected in EXPECTED_PARAMS.items():
        for name, n in expected.items():
            assert counts[family][name] == n, (family, name)
    # TADT = Baseline + its routing controller (paper, Table 3: 9.17M / 9.18M)
    assert counts["extractors"]["tadt"] > counts["extractors"]["baseline"]


def test_models_table_is_readable(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "11,603,044" in out and "swinir" in out and "liif" in out and "upsampler" in out


def test_flops_one_size_json(capsys):
    code, out, _ = run_cli(capsys, "flops", "--extractor", "edsr-baseline", "--size", "768x1020", "--json")
    assert code == 0
    res = json.loads(out)
    # head 3->64, 32 convs 64->64 and the body conv, all 3x3, per LR pixel
    per_pixel = 3 * 64 * 9 + 33 * 64 * 64 * 9
    assert res["flops"] == per_pixel * 768 * 1020
    assert res["gflops"] == pytest.approx(per_pixel * 768 * 1020 / 1e9)
    assert (res["extractor"], res["size"], res["h"], res["w"], res["params"]) == (
        "edsr-baseline", "768x1020", 768, 1020, 1_220_440)


def test_flops_direct_equals_fast(capsys):
    args = ["flops", "--extractor", "tadt", "--extractor-args", TADT_SMALL, "--size", "37x53",
            "--routing", "1101_0011", "--json"]
    fast = json.loads(run_cli(capsys, *args)[1])
    direct = json.loads(run_cli(capsys, *args, "--direct")[1])
    assert fast["flops"] == direct["flops"] > 0
    assert (fast["method"], direct["method"]) == ("fast", "direct")
    assert fast["routing"] == "11010011" and fast["active_branches"] == 5


def test_flops_tadt_without_checkpoint_says_its_tarc_is_untrained(capsys):
    code, out, err = run_cli(capsys, "flops", "--extractor", "tadt", "--extractor-args", TADT_SMALL,
                             "--size", "40x56", "--scale", "2", "--json")
    assert code == 0
    res = json.loads(out)
    assert "freshly initialised" in res["note"] and "freshly initialised" in err
    assert res["routing_source"] == "tarc" and len(res["routing"]) == 8 and res["tarc_gflops"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--extractor", "swinir", "--size", "768by1020"], "bad --size"),
    (["--extractor", "swinir", "--size", "0x10"], "bad --size"),
    (["--extractor", "nosuch", "--size", "8x8"], "unknown extractor 'nosuch'"),
    (["--extractor", "tadt", "--extractor-args", TADT_SMALL, "--size", "8x8", "--routing", "10"], "bad --routing"),
    (["--extractor", "tadt", "--extractor-args", TADT_SMALL, "--size", "8x8", "--routing", "1x101111"],
     "bad --routing"),
    (["--extractor", "swinir", "--size", "8x8", "--routing", "all"], "has no routing"),
    (["--extractor", "tadt", "--extractor-args", TADT_SMALL, "--size", "8x8"], "--scale"),
    (["--extractor", "swinir"], "--size"),
])
def test_flops_user_errors_are_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, "flops", *argv)
    assert code == 2
    assert message in err and err.startswith("error: ") and err.count("\n") == 1


def _fake_pairs(data_cfg, dataset, scale):
    """Two LR images per scale, of the sizes x2..x4 LR images would have."""
    assert dataset == "fake-set"
    for i, (h, w) in enumerate([(48, 40), (30, 52)]):
        h_lr, w_lr = int(h * 2 / scale), int(w * 2 / scale)
        g = torch.Generator().manual_seed(i)
        yield f"img{i}", torch.rand(3, h_lr, w_lr, generator=g), torch.rand(3, h_lr * 2, w_lr * 2, generator=g)


def test_flops_dataset_mode_writes_per_image_rows(capsys, tmp_path, monkeypatch):
    import harness.data
    from harness import flops as FL

    monkeypatch.setattr(harness.data, "eval_pairs", _fake_pairs)
    out_csv = tmp_path / "flops" / "tadt.csv"
    code, out, _ = run_cli(capsys, "flops", "--extractor", "tadt", "--extractor-args", TADT_SMALL,
                           "--dataset", "fake-set", "--scales", "2,4", "--out", str(out_csv), "--json")
    assert code == 0
    summary = json.loads(out)
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["image"], r["scale"]) for r in rows] == [("img0", "2"), ("img1", "2"), ("img0", "4"), ("img1", "4")]
    assert set(rows[0]) >= {"image", "scale", "h", "w", "gflops", "active_branches"}
    assert not list(out_csv.parent.glob(".*.tmp"))
    # each row is the count along the routing the TARC picks on that real image, as evaluation feeds it
    torch.manual_seed(0)
    from extractors import create_extractor
    from harness.evaluate import evaluation_routing

    ext = create_extractor("tadt", **json.loads(TADT_SMALL)).eval()
    for r, (name, lr, _) in zip(rows, [p for s in (2, 4) for p in _fake_pairs(None, "fake-set", s)]):
        h, w = tuple(lr.shape[-2:])
        assert (int(r["h"]), int(r["w"])) == (h, w)
        scale = float(r["scale"])
        bits = FL.canonical_routing(ext, evaluation_routing(ext, lr, scale).r)
        assert r["routing"] == bits and int(r["active_branches"]) == bits.count("1")
        direct = FL.direct_extractor_flops(ext, h, w, scale=scale, routing=bits)
        assert float(r["gflops"]) == pytest.approx(direct / 1e9, abs=1e-6)
    assert summary["scales"]["2"]["images"] == 2 and "freshly initialised" in summary["note"]


def test_flops_checkpoint_mode_uses_the_checkpoints_tarc(capsys, tmp_path):
    from harness import flops as FL
    from harness.checkpoint import load_model, save_checkpoint
    from upsamplers import create_model

    spec = {"upsampler": "liif", "extractor": "tadt", "extractor_args": json.loads(TADT_SMALL),
            "upsampler_args": {}}
    torch.manual_seed(3)
    model = create_model("liif", "tadt", spec["extractor_args"])
    with torch.no_grad():  # a TARC unlike a fresh one: logits strongly favour some branches
        model.encoder.tarc.image_branch[-1].bias.copy_(torch.linspace(-6, 6, 8))
    ckpt = save_checkpoint(tmp_path / "tadt-liif.pth", model, spec, step=1)
    code, out, err = run_cli(capsys, "flops", "--checkpoint", str(ckpt), "--size", "40x56", "--scale", "3",
                             "--json")
    assert code == 0
    res = json.loads(out)
    assert res["extractor"] == "tadt" and res["checkpoint"] == str(ckpt) and "freshly" not in err
    from harness.evaluate import evaluation_routing

    enc = load_model(ckpt)[0].encoder
    lr = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(0))
    bits = FL.canonical_routing(enc, evaluation_routing(enc, lr, 3.0).r)
    assert res["routing"] == bits and res["routing_source"] == "tarc"
    assert res["flops"] == FL.direct_extractor_flops(enc, 40, 56, scale=3.0, routing=bits)


@pytest.mark.parametrize("argv,message", [
    (["flops", "--extractor", "edsr-baseline", "--size", "8x8", "--scale", "nan"], "bad --scale 'nan'"),
    (["flops", "--extractor", "edsr-baseline", "--size", "8x8", "--scale", "two"], "bad --scale 'two'"),
    (["flops", "--extractor", "edsr-baseline", "--dataset", "set5", "--scales", "2,,4", "--out", "{tmp}/f.csv"],
     "bad --scales '2,,4'"),
    (["flops", "--extractor", "edsr-baseline", "--dataset", "set5", "--scales", "0.5", "--out", "{tmp}/f.csv"],
     "scales must be >= 1"),
    (["evaluate", "--bicubic", "--dataset", "set5", "--scales", "2,inf", "--out", "{tmp}/e.csv"],
     "bad --scales '2,inf'"),
    (["evaluate", "--bicubic", "--dataset", "set5", "--scales", "", "--out", "{tmp}/e.csv"], "bad --scales: empty"),
    (["upscale", "{tmp}/in.png", "--scale", "inf", "--checkpoint", "{tmp}/c.pth", "-o", "{tmp}/o.png"],
     "bad --scale 'inf'"),
    (["upscale", "{tmp}/in.png", "--size", "10x0", "--checkpoint", "{tmp}/c.pth", "-o", "{tmp}/o.png"],
     "bad --size '10x0'"),
])
def test_scale_and_size_errors_are_one_line_in_every_verb(capsys, tmp_path, argv, message):
    code, out, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and out == ""
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())   # nothing written


def test_a_missing_verb_module_is_an_import_error(monkeypatch):
    import harness.cli

    monkeypatch.setitem(harness.cli.VERBS, "renamed", "renamed_away")
    with pytest.raises(ModuleNotFoundError) as info:
        harness.cli.build_parser()
    assert info.value.name == "harness.commands.renamed_away"


def test_help_lists_every_verb_without_importing_torch():
    import os
    import subprocess
    import sys

    from harness.cli import VERBS
    from harness.config import ROOT

    probe = ("import sys; from harness.cli import build_parser; h = build_parser().format_help(); "
             "print(sorted(m for m in ('torch', 'numpy', 'extractors', 'upsamplers.base') if m in sys.modules)); "
             "print(h)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=ROOT,
                         check=True).stdout
    assert out.splitlines()[0] == "[]"
    listed = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("    ") and line[4] != " "]
    assert listed == list(VERBS)
