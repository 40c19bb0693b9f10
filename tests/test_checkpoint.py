"""Checkpoints: our format round-trips, released LIIF/LTE files import, bad files fail clearly."""
from __future__ import annotations

import os
import pickle
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import checkpoint as ckpt
from harness.errors import HarnessError
from upsamplers import create_model
from upsamplers.coords import make_cell, make_coord

pytest.importorskip("extractors.edsr")

TINY_EDSR = {"n_resblocks": 2, "n_feats": 16}
SPEC = {"upsampler": "liif", "extractor": "edsr-baseline", "extractor_args": TINY_EDSR,
        "upsampler_args": {"hidden_list": [32, 32]}}


def queries(h, w):
    coord = make_coord((h, w)).unsqueeze(0)
    return coord, make_cell((h, w), coord.shape[1]).unsqueeze(0)


def outputs(model, seed=0, size=(6, 7), hr=(13, 17)):
    g = torch.Generator().manual_seed(seed)
    inp = torch.rand(1, 3, *size, generator=g) * 2 - 1
    coord, cell = queries(*hr)
    return model.eval().predict(inp, coord, cell)


def tiny_model(seed=0, spec=SPEC):
    torch.manual_seed(seed)
    return create_model(spec["upsampler"], spec["extractor"], spec["extractor_args"],
                        spec["upsampler_args"])


# -- our format -----------------------------------------------------------------
def test_roundtrip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)
    coord, cell = queries(9, 9)
    for _ in range(3):
        model(torch.rand(1, 3, 4, 4) * 2 - 1, coord, cell).abs().mean().backward()
        opt.step(), sched.step(), opt.zero_grad()
    torch.manual_seed(13)
    rng = {"ranks": [{"torch": torch.get_rng_state(), "python": random.getstate(),
                      "numpy": np.random.get_state()[1]}]}  # an ndarray: stored as a tensor
    expect = torch.rand(3)
    path = ckpt.save_checkpoint(tmp_path / "run" / "last.pth", model, SPEC, step=3, optimizer=opt,
                                scheduler=sched, rng=rng,
                                run={"name": "edsr-baseline-liif", "out": tmp_path})
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temp file left

    loaded, meta = ckpt.load_model(path)
    assert not loaded.training
    assert torch.equal(outputs(loaded), outputs(model))
    assert meta["format"] == ckpt.FORMAT and meta["step"] == 3
    assert meta["spec"] == SPEC and meta["run"]["out"] == str(tmp_path)

    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-4)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[2, 4], gamma=0.5)
    opt2.load_state_dict(meta["optimizer"])
    sched2.load_state_dict(meta["scheduler"])
    assert sched2.last_epoch == 3 and opt2.param_groups[0]["lr"] == pytest.approx(5e-5)
    states = opt2.state_dict()["state"]
    assert states and all(int(s["step"]) == 3 for s in states.values())

    saved = meta["rng"]["ranks"][0]
    assert saved["python"] == rng["ranks"][0]["python"]
    assert torch.equal(saved["numpy"], torch.from_numpy(rng["ranks"][0]["numpy"]))
    torch.set_rng_state(saved["torch"])
    assert torch.equal(torch.rand(3), expect)


def test_ddp_prefix_is_stripped(tmp_path):
    class Wrapped(nn.Module):  # what DDP/DataParallel do to the keys
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = tiny_model(1)
    assert all(k.startswith("module.") for k in Wrapped(model).state_dict())
    path = ckpt.save_checkpoint(tmp_path / "c.pth", Wrapped(model), SPEC, step=0)
    keys = list(ckpt.load_checkpoint(path)["state_dict"])
    assert keys == list(model.state_dict())
    loaded, _ = ckpt.load_model(path)
    assert torch.equal(outputs(loaded), outputs(model))


def test_save_is_atomic(tmp_path, monkeypatch):
    model = tiny_model(2)
    path = ckpt.save_checkpoint(tmp_path / "c.pth", model, SPEC, step=1)
    before = path.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, model, SPEC, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]


def test_save_refuses_data_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match="run"):
        ckpt.save_checkpoint(tmp_path / "c.pth", tiny_model(), SPEC, step=0, run={"x": object()})
    with pytest.raises(ValueError, match="missing"):
        ckpt.save_checkpoint(tmp_path / "c.pth", tiny_model(), {"upsampler": "liif"}, step=0)
    assert not (tmp_path / "c.pth").exists()


# -- released LIIF / LTE files --------------------------------------------------
def release_file(path, name, args, state_dict, epoch=1000):
    torch.save({"model": {"name": name, "args": args, "sd": state_dict},
                "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": {}},
                "epoch": epoch}, path)
    return path


LIIF_RELEASE_ARGS = {
    "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
    "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
}


def reference_edsr_liif(seed=3):
    torch.manual_seed(seed)
    return create_model("liif", "edsr-baseline", {}, {})  # the released configuration


def test_released_liif_file_loads_strictly(tmp_path):
    model = reference_edsr_liif()
    sd = model.state_dict()
    for key in ("encoder.sub_mean.weight", "encoder.head.0.weight", "encoder.body.15.body.2.bias",
                "encoder.body.16.weight", "imnet.layers.0.weight", "imnet.layers.8.bias"):
        assert key in sd  # the reference's key names
    assert sd["imnet.layers.0.weight"].shape == (256, 580)
    path = release_file(tmp_path / "edsr-baseline-liif.pth", "liif", LIIF_RELEASE_ARGS, sd)
    loaded, meta = ckpt.load_model(path)
    assert meta["format"] == ckpt.RELEASE_FORMAT and meta["epoch"] == 1000
    assert meta["spec"] == {"upsampler": "liif", "extractor": "edsr-baseline",
                            "extractor_args": {}, "upsampler_args": {"hidden_list": [256] * 4}}
    assert torch.equal(outputs(loaded, size=(5, 6), hr=(9, 11)), outputs(model, size=(5, 6), hr=(9, 11)))


def test_released_lte_swinir_file_loads_strictly(tmp_path):
    pytest.importorskip("extractors.swinir")
    swin = {"img_size": 16, "embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4,
            "mlp_ratio": 2}
    torch.manual_seed(4)
    model = create_model("lte", "swinir", swin, {"hidden_dim": 16, "hidden_list": [16, 16]})
    sd = model.state_dict()
    for key in ("encoder.conv_first.weight", "coef.weight", "freq.bias", "phase.weight",
                "imnet.layers.4.bias"):
        assert key in sd
    args = {"encoder_spec": {"name": "swinir", "args": {**swin, "no_upsampling": True, "upscale": 2,
                                                        "upsampler": "none", "img_range": 1.0}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}},
            "hidden_dim": 16}
    path = release_file(tmp_path / "swinir-lte.pth", "lte", args, sd)
    loaded, meta = ckpt.load_model(path)
    assert meta["spec"]["extractor"] == "swinir" and meta["spec"]["extractor_args"] == swin
    assert meta["spec"]["upsampler_args"] == {"hidden_list": [16, 16], "hidden_dim": 16}
    assert meta["dropped_encoder_args"] == ["img_range", "upsampler", "upscale"]
    assert torch.equal(outputs(loaded, size=(5, 7), hr=(9, 12)), outputs(model, size=(5, 7), hr=(9, 12)))


def test_released_metasr_file_without_imnet_spec(tmp_path):
    torch.manual_seed(5)
    model = create_model("metasr", "edsr-baseline", TINY_EDSR, {})
    args = {"encoder_spec": {"name": "edsr-baseline",
                             "args": {**TINY_EDSR, "no_upsampling": True, "scale": 2}}}
    path = release_file(tmp_path / "m.pth", "metasr", args, model.state_dict())
    loaded, meta = ckpt.load_model(path)
    assert meta["dropped_encoder_args"] == ["scale"]
    assert torch.equal(outputs(loaded), outputs(model))


def test_state_dict_mismatch_lists_keys(tmp_path):
    sd = reference_edsr_liif().state_dict()
    args = {**LIIF_RELEASE_ARGS,
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256]}}}
    path = release_file(tmp_path / "three-layers.pth", "liif", args, sd)
    with pytest.raises(HarnessError) as info:
        ckpt.load_model(path)
    msg = str(info.value)
    assert "three-layers.pth" in msg and "unexpected" in msg and "imnet.layers.8.weight" in msg

    del sd["encoder.head.0.weight"]
    path = release_file(tmp_path / "holes.pth", "liif", LIIF_RELEASE_ARGS, sd)
    with pytest.raises(HarnessError, match=r"holes\.pth.*missing keys \(encoder\.head\.0\.weight\)"):
        ckpt.load_model(path)

    sd = tiny_model().state_dict()  # 16 features where the file's spec says 64
    path = release_file(tmp_path / "narrow.pth", "liif", LIIF_RELEASE_ARGS, sd)
    with pytest.raises(HarnessError, match=r"narrow\.pth.*another shape.*encoder\.head\.0\.weight"):
        ckpt.load_model(path)


def test_load_weights_copies_only_what_fits_and_keeps_allowed_keys():
    src, dst = tiny_model(seed=1), tiny_model(seed=2)
    sd = OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items())  # as DDP saves it
    assert ckpt.load_weights(dst, sd, "src") == (len(sd), 0)
    assert torch.equal(outputs(dst), outputs(src))

    # A key the source lacks is allowed only under may_lack, and keeps its value.
    dst = tiny_model(seed=2)
    kept = dst.state_dict()["imnet.layers.0.bias"].clone()
    partial = {k: v for k, v in src.state_dict().items() if k != "imnet.layers.0.bias"}
    with pytest.raises(HarnessError, match=r"^src does not fit LIIF: 1 missing keys \(imnet\.layers\.0\.bias\)$"):
        ckpt.load_weights(dst, partial, "src")
    assert ckpt.load_weights(dst, partial, "src", "the run", may_lack=("imnet.layers.0.",)) \
        == (len(partial), 1)
    assert torch.equal(dst.state_dict()["imnet.layers.0.bias"], kept)
    assert torch.equal(dst.state_dict()["encoder.head.0.weight"], src.state_dict()["encoder.head.0.weight"])

    # Every kind of misfit in one line; nothing is copied.
    dst = tiny_model(seed=2)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    bad = dict(partial, extra=torch.zeros(1))
    bad["encoder.head.0.bias"] = torch.zeros(3)
    with pytest.raises(HarnessError) as info:
        ckpt.load_weights(dst, bad, "file x.pth", "run r")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("file x.pth does not fit run r: ")
    assert msg.endswith("1 missing keys (imnet.layers.0.bias); 1 unexpected keys (extra); 1 of another "
                        "shape (file vs model: encoder.head.0.bias (3,) vs (16,))")
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())


@pytest.mark.parametrize("model_spec, needle", [
    ({"name": "ciaosr", "args": {}}, "unknown model 'ciaosr'"),
    ({"name": "liif", "args": {**LIIF_RELEASE_ARGS, "encoder_spec": {"name": "edsr", "args": {}}}},
     "unknown encoder 'edsr'"),
    ({"name": "liif", "args": {**LIIF_RELEASE_ARGS, "encoder_spec": {"name": "rdn", "args": {}}}},
     "no_upsampling"),
])
def test_unusable_release_specs(tmp_path, model_spec, needle):
    path = tmp_path / "r.pth"
    torch.save({"model": {**model_spec, "sd": {}}, "epoch": 1}, path)
    with pytest.raises(HarnessError, match=needle) as info:
        ckpt.load_model(path)
    assert "r.pth" in str(info.value)


def test_unknown_name_in_our_format(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "c.pth", tiny_model(),
                                {**SPEC, "upsampler": "ciaosr"}, step=0)
    with pytest.raises(HarnessError, match=r"c\.pth.*unknown upsampler 'ciaosr'"):
        ckpt.load_model(path)


# -- damaged and hostile files --------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(HarnessError, match=r"nope\.pth does not exist"):
        ckpt.load_model(tmp_path / "nope.pth")


def test_truncated_random_and_empty_files(tmp_path):
    good = ckpt.save_checkpoint(tmp_path / "good.pth", tiny_model(), SPEC, step=0).read_bytes()
    cases = {"half.pth": good[:len(good) // 2], "short.pth": good[:-40], "head.pth": good[:64],
             "random.pth": np.random.default_rng(0).bytes(4096), "empty.pth": b"",
             "text.pth": b"not a checkpoint\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(HarnessError, match=rf"{name} cannot be read"):
            ckpt.load_checkpoint(tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(HarnessError, match=r"list\.pth holds a list"):
        ckpt.load_model(tmp_path / "list.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(HarnessError, match=r"other\.pth is neither"):
        ckpt.load_model(tmp_path / "other.pth")


class _Hostile:
    sentinel = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_hostile_global_is_refused_and_not_run(tmp_path, writer):
    sentinel = tmp_path / "pwned"
    _Hostile.sentinel = str(sentinel)
    path = tmp_path / "hostile.pth"
    payload = {"model": {"name": "liif", "args": {}, "sd": OrderedDict()}, "x": _Hostile()}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(HarnessError, match=r"hostile\.pth was refused.*system") as info:
        ckpt.load_model(path)
    assert "nothing from the file was executed" in str(info.value)
    assert not sentinel.exists()
    # the file really is hostile: plain unpickling runs the command
    if writer == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
        assert sentinel.exists()
