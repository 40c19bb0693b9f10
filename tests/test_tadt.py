"""TADT and its Baseline backbone (tadt/model.py, tadt/loss.py).

Paper-width models are only built for parameter counts; every forward pass
uses SMALL widths (same structure: 4 branches, pooled global branch, N groups).
"""
from __future__ import annotations

import math

import pytest
import torch

from extractors import EXTRACTORS, create_extractor
from harness.checkpoint import load_baseline_weights
from harness.errors import HarnessError
from tadt import (
    LAMBDA_BETA,
    TADT,
    Baseline,
    GlobalSelfAttention,
    LocalSelfAttention,
    RoutingInfo,
    TaskAwareRoutingController,
    intensity_loss,
    intensity_threshold,
)

# Same structure as the paper's (3 local windows dividing the global one, K/V
# pooled by 4), tiny widths: C = 16 (branches of 4 channels, 2 heads), N = 2.
SMALL = dict(embed_dim=16, num_groups=2, windows=(2, 4, 8), global_window=16, pooled_size=4,
             heads=2, mlp_ratio=2.0)
N4 = 4 * SMALL["num_groups"]

# Calibrated counts (tadt/README.md): the paper's Table 3 says 9.17M / 9.18M.
PARAMS_BASELINE = 9_168_512
PARAMS_TADT = 9_180_033
PARAMS_TARC = 11_521


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def small(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_extractor(name, **{**SMALL, **kw}).eval()


# --------------------------------------------------------------------------- paper configuration


def test_parameter_counts_match_table3():
    with torch.device("meta"):
        base, tadt = Baseline(), TADT()
    assert n_params(base) == PARAMS_BASELINE
    assert n_params(tadt) == PARAMS_TADT
    assert n_params(tadt.tarc) == PARAMS_TARC
    assert round(n_params(base) / 1e6, 2) == 9.17 and round(n_params(tadt) / 1e6, 2) == 9.18
    assert (base.out_dim, base.window_size, base.n_branches, base.scale_aware) == (64, 48, 32, False)
    assert tadt.scale_aware is True
    # ablations change the TARC only (no scale branch when beta is not learned)
    with torch.device("meta"):
        fixed = TADT(beta_mode="fixed")
    assert n_params(tadt) - n_params(fixed) == sum(p.numel() for p in tadt.tarc.scale_branch.parameters())


def test_registered_and_keys_shared():
    assert EXTRACTORS.get("baseline") is Baseline and EXTRACTORS.get("tadt") is TADT
    base, tadt = small("baseline"), small("tadt")
    bk, tk = set(base.state_dict()), set(tadt.state_dict())
    assert bk <= tk and all(k.startswith("tarc.") for k in tk - bk)
    res = tadt.load_state_dict(base.state_dict(), strict=False)
    assert not res.unexpected_keys and all(k.startswith("tarc.") for k in res.missing_keys)


def test_baseline_checkpoint_loads_into_tadt():
    base, tadt = small("baseline", seed=1), small("tadt", seed=2)
    load_baseline_weights(tadt, base.state_dict())
    x = torch.randn(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(base(x), tadt(x, scale=2.0, routing="all"))
    # the upsampler-level keys (encoder.*) work too
    tadt2 = small("tadt", seed=3)
    load_baseline_weights(tadt2, {f"encoder.{k}": v for k, v in base.state_dict().items()})
    with torch.no_grad():
        assert torch.equal(base(x), tadt2(x, scale=2.0, routing="all"))
    with pytest.raises(HarnessError):
        load_baseline_weights(tadt, {"conv_first.weight": base.conv_first.weight})


# --------------------------------------------------------------------------- shapes and routing API


@pytest.mark.parametrize("name", ["baseline", "tadt"])
@pytest.mark.parametrize("scale", [1.5, 30.0])
def test_odd_sizes_and_scales(name, scale):
    enc = small(name)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        y = enc(x, scale=scale)
    assert y.shape == (2, 64, 37, 53) and torch.isfinite(y).all()
    info = enc.last_routing
    assert isinstance(info, RoutingInfo) and info.r.shape == (2, N4)
    if name == "baseline":
        assert info.p is None and info.beta is None and bool((info.r == 1).all())
    else:
        assert info.p.shape == (2, N4) and info.beta.shape == (2,)


def test_tiny_inputs_and_per_sample_scales():
    enc = small("tadt")
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 1, 5), scale=2.0).shape == (1, 64, 1, 5)
        y = enc(torch.randn(3, 3, 9, 7), scale=torch.tensor([1.2, 2.5, 4.0]))
    assert y.shape == (3, 64, 9, 7)
    with pytest.raises(ValueError, match="scale"):
        enc(torch.randn(1, 3, 8, 8))  # TADT needs the scale to route


def test_forced_routing_forms():
    enc = small("baseline")
    x = torch.randn(2, 3, 16, 16)
    bits = "1011_0110"
    want = torch.tensor([[1, 0, 1, 1, 0, 1, 1, 0]] * 2, dtype=torch.float32)
    with torch.no_grad():
        for routing in (bits, bits.replace("_", ""), want[0], want, want[0].tolist()):
            enc(x, routing=routing)
            assert torch.equal(enc.last_routing.r, want)
        enc(x, routing="none")
        assert enc.last_routing.r.sum() == 0 and enc.last_routing.bits() == "0000_0000"
        enc(x, routing="all")
        assert enc.last_routing.active.tolist() == [N4, N4]
    for bad in ("101", "10110112", torch.full((N4,), 0.5), torch.ones(3, N4)):
        with pytest.raises(ValueError):
            enc(x, routing=bad)


def test_model_and_counter_share_one_routing_parser():
    """tadt.routing reads every form once: the model's (B, 4N) tensor and the
    counter's canonical bit string agree, and both reject the same inputs."""
    from harness.flops import canonical_routing
    from tadt.routing import routing_string, routing_tensor

    enc = small("tadt")
    want = [1, 0, 1, 1, 0, 1, 1, 0]
    for form in ("1011_0110", " 10110110 ", want, torch.tensor(want), torch.tensor([want], dtype=torch.float64)):
        assert routing_tensor(form, N4, 3).tolist() == [want] * 3
        assert routing_string(form, N4) == canonical_routing(enc, form) == "10110110"
    assert routing_string("ALL", N4) == "1" * N4 and routing_string("none", N4) == "0" * N4
    for bad in ("101", "1011011x", [0.5] * N4, torch.ones(2, N4), None):
        with pytest.raises(ValueError):
            routing_tensor(bad, N4, 1)
        with pytest.raises(ValueError):
            canonical_routing(enc, bad)
    with pytest.raises(ValueError, match=f"{N4} bits"):
        routing_string("1" * (N4 + 1), N4)


def test_mixed_batch_equals_each_sample_alone():
    """A (B, 4N) routing with different rows runs each sample along its own path."""
    enc = small("tadt").double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    r = torch.tensor([[1, 0, 1, 1, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0, 0, 1]], dtype=torch.float64)
    with torch.no_grad():
        both = enc(x, routing=r)
        for i in range(2):
            alone = enc(x[i:i + 1], routing=r[i])
            torch.testing.assert_close(both[i:i + 1], alone, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- skipping is exact and free


def _zero_branch(branch):
    """Make ``branch`` output zeros (the reference semantics of r = 0, Eq. 1)."""
    def forward(x, out=None):
        z = torch.zeros_like(x)
        if out is None:
            return z
        out.copy_(z)
        return out
    branch.forward = forward


def test_skipped_branch_equals_zeroed_branch_and_never_runs():
    torch.manual_seed(0)
    enc = small("baseline").double()
    ref = small("baseline").double()
    ref.load_state_dict(enc.state_dict())
    bits = "1010_0111"
    x = torch.randn(1, 3, 21, 18, dtype=torch.float64)
    fired = []
    for g, group in enumerate(enc.groups):
        for blk in group.blocks:
            for j, br in enumerate(blk.branches):
                br.qkv.register_forward_hook(lambda *a, key=(g, j): fired.append(key))
    for g, group in enumerate(ref.groups):
        for blk in group.blocks:
            for j, br in enumerate(blk.branches):
                if bits.replace("_", "")[4 * g + j] == "0":
                    _zero_branch(br)
    with torch.no_grad():
        got = enc(x, routing=bits)
        want = ref(x, routing="all")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # the qkv layer of an inactive branch is never called; active ones run once per MSTB
    on = {(g, j) for g in range(2) for j in range(4) if bits.replace("_", "")[4 * g + j] == "1"}
    assert set(fired) == on and len(fired) == 2 * len(on)


def _analytic_branch_flops(cfg: dict, j: int) -> int:
    """fvcore flops per padded pixel of branch j in one MSTB: QKV + attention + its
    slice of the projection (Eq. 2)."""
    c = cfg["embed_dim"]
    bd = c // 4
    keys = cfg["windows"][j] ** 2 if j < 3 else cfg["pooled_size"] ** 2
    return bd * 3 * bd + 2 * bd * keys + c * bd


def test_skipped_branches_cost_no_flops():
    from harness.flops import count_flops

    enc = small("baseline")
    x = torch.randn(1, 3, 16, 32)  # = padded size: 512 pixels
    pixels = 16 * 32
    total = {}
    for bits in ("1111_1111", "1110_1111", "0110_1011", "0000_1000"):
        total[bits], _, unsupported = count_flops(enc, x, {"routing": bits})
        assert not unsupported
    full = total["1111_1111"]
    c = SMALL["embed_dim"]
    for bits, t in total.items():
        if bits == "1111_1111":
            continue
        assert t < full
        off = [i for i, b in enumerate(bits.replace("_", "")) if b == "0"]
        saved = sum(2 * _analytic_branch_flops(SMALL, i % 4) for i in off)  # two MSTBs per group
        # a group with no active branch also skips each MSTB's first layer norm (5 per element)
        groups_off = [g for g in range(2) if all(4 * g + j in off for j in range(4))]
        saved += len(groups_off) * 2 * 5 * c
        assert full - t == saved * pixels, bits


# --------------------------------------------------------------------------- TARC


def test_eq3_task_probability_by_hand():
    e = torch.tensor([[0.0, 0.0, math.log(3.0), -math.log(3.0)]])  # sigmoid: .5 .5 .75 .25, sum 2
    p = TaskAwareRoutingController.task_probability(e, torch.tensor([0.5]))
    torch.testing.assert_close(p, torch.tensor([[0.5, 0.5, 0.75, 0.25]]))
    p = TaskAwareRoutingController.task_probability(e, torch.tensor([1.0]))  # 2*sigma, clamped at 1
    torch.testing.assert_close(p, torch.tensor([[1.0, 1.0, 1.0, 0.5]]))
    # a batch of two intensities
    p = TaskAwareRoutingController.task_probability(e.expand(2, 4), torch.tensor([0.25, 0.8]))
    torch.testing.assert_close(p, torch.tensor([[0.25, 0.25, 0.375, 0.125], [0.8, 0.8, 1.0, 0.4]]))


def test_beta_modes():
    x = torch.randn(2, 3, 12, 12)
    fixed, linear, learned = (small("tadt", beta_mode=m) for m in ("fixed", "linear", "learned"))
    with torch.no_grad():
        fixed(x, scale=torch.tensor([2.0, 7.0]))
        assert fixed.last_routing.beta.tolist() == [0.5, 0.5]
        linear(x, scale=torch.tensor([3.0, 30.0]))
        torch.testing.assert_close(linear.last_routing.beta, torch.tensor([0.75, 7.5]))
        assert bool((linear.last_routing.p[1] == 1).all()) and linear.last_routing.active[1] == N4
        learned(x, scale=3.0)
        beta = learned.last_routing.beta
        assert bool(((beta > 0) & (beta < 1)).all())
    assert fixed.tarc.scale_branch is None
    with pytest.raises(ValueError):
        small("tadt", beta_mode="quadratic")


def test_eval_routing_is_deterministic_and_keeps_expected_count():
    enc = small("tadt")
    x = torch.randn(3, 3, 16, 16)
    s = torch.tensor([1.5, 2.5, 4.0])
    with torch.no_grad():
        enc(x, scale=s)
        a = enc.last_routing
        enc(x, scale=s)
        b = enc.last_routing
        assert torch.equal(a.r, b.r)
        # top-k: round(sum p) branches, those of largest p
        assert torch.equal(a.active, torch.round(a.p.sum(1)).long())
        for i in range(3):
            on, off = a.p[i][a.r[i] == 1], a.p[i][a.r[i] == 0]
            if len(on) and len(off):
                assert on.min() >= off.max()
        # the cheap TARC-only call agrees with forward
        assert torch.equal(enc.routing_for(x, s).r, a.r)
        enc.eval_routing = "threshold"
        enc(x, scale=s)
        assert torch.equal(enc.last_routing.r, (a.p >= 0.5).float())


def test_topk_ties_break_to_lower_index():
    enc = small("tadt")
    p = torch.full((1, N4), 0.5)  # sum 4: keep four, the first four
    assert enc.decide(p).tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]


def test_training_samples_bernoulli_with_straight_through_gradient():
    enc = small("tadt").train()
    x = torch.randn(4, 3, 16, 16)
    s = torch.tensor([1.2, 2.0, 3.0, 4.0])
    torch.manual_seed(0)
    feat = enc(x, scale=s)
    info = enc.last_routing
    assert info.r.requires_grad and set(info.r.detach().unique().tolist()) <= {0.0, 1.0}
    (feat.square().mean() + LAMBDA_BETA * intensity_loss(info.beta, s)).backward()
    for name in ("image_branch.0.weight", "image_branch.2.weight", "image_branch.6.weight",
                 "scale_branch.0.weight", "scale_branch.2.weight", "scale_branch.4.weight"):
        grad = dict(enc.tarc.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # with a forced routing, no TARC runs: no p, no beta, no gradient path
    enc.zero_grad()
    enc(x, scale=s, routing="all").mean().backward()
    assert enc.last_routing.p is None and enc.tarc.image_branch[0].weight.grad is None


def test_ste_gradient_equals_dl_dp():
    """Eq. 4: the gradient reaching p through r is dL/dr."""
    enc = small("tadt").train()
    x = torch.randn(2, 3, 16, 16)
    p = torch.full((2, N4), 0.7, requires_grad=True)
    r = enc.decide(p)
    assert set(r.detach().unique().tolist()) <= {0.0, 1.0}
    r.retain_grad()
    enc.forward_backbone(x, r).sum().backward()
    torch.testing.assert_close(p.grad, r.grad)


# --------------------------------------------------------------------------- attention numerics


def _explicit(q, k, v, bias):
    a = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias
    return a.softmax(-1) @ v


def test_local_attention_matches_explicit():
    torch.manual_seed(0)
    br = LocalSelfAttention(8, 4, 2).double()
    x = torch.randn(2, 8, 12, 8, dtype=torch.float64)
    got = br(x)
    # reference: loop over windows, Swin's (2m-1)^2 relative index
    qkv = br.qkv(x)
    table = br.relative_position_bias_table
    m = 4
    coords = [(i, j) for i in range(m) for j in range(m)]
    bias = torch.stack([torch.stack([table[(a[0] - b[0] + m - 1) * (2 * m - 1) + (a[1] - b[1] + m - 1)]
                                     for b in coords]) for a in coords]).permute(2, 0, 1)
    want = torch.empty_like(got)
    for bi in range(2):
        for wy in range(0, 8, m):
            for wx in range(0, 12, m):
                t = qkv[bi, wy:wy + m, wx:wx + m].reshape(m * m, 3, 2, 4).permute(1, 2, 0, 3)
                o = _explicit(t[0], t[1], t[2], bias)  # (heads, L, hd)
                want[bi, wy:wy + m, wx:wx + m] = o.permute(1, 0, 2).reshape(m, m, 8)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_global_attention_matches_explicit():
    torch.manual_seed(0)
    m, d = 8, 2  # pooling stride 4
    br = GlobalSelfAttention(8, m, d, 2).double()
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64)
    got = br(x)
    qkv = br.qkv(x)
    table = br.relative_position_bias_table
    side = 2 * m - 4
    assert table.shape[0] == side * side
    qc = [(i, j) for i in range(m) for j in range(m)]
    kc = [(4 * i, 4 * j) for i in range(d) for j in range(d)]  # top-left pixel of each pooled cell
    bias = torch.stack([torch.stack([table[(a[0] - b[0] + m - 4) * side + (a[1] - b[1] + m - 4)]
                                     for b in kc]) for a in qc]).permute(2, 0, 1)
    want = torch.empty_like(got)
    for wy in range(0, 16, m):
        win = qkv[0, wy:wy + m]  # (m, m, 24)
        q = win[..., :8].reshape(m * m, 2, 4).transpose(0, 1)
        kv = win[..., 8:].reshape(d, 4, d, 4, 16).amax(dim=(1, 3)).reshape(d * d, 2, 2, 4)
        k, v = kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1)
        want[0, wy:wy + m] = _explicit(q, k, v, bias).transpose(0, 1).reshape(m, m, 8)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_cached_bias_follows_weight_updates():
    enc = small("baseline")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        enc(x)
        for p in enc.parameters():
            if p.dim() == 2 and p.shape[0] > 40:  # bias tables of the global branches
                p.add_(0.5)
        y = enc(x)
    fresh = small("baseline")
    fresh.load_state_dict(enc.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)


# --------------------------------------------------------------------------- loss


def test_intensity_loss_by_hand():
    assert intensity_threshold(4.0) == 0.75 and intensity_threshold(9.0) == 1.0 and intensity_threshold(1.0) == 0.5
    torch.testing.assert_close(intensity_loss(torch.tensor([0.8]), 4.0), torch.tensor(0.8))
    torch.testing.assert_close(intensity_loss(torch.tensor([0.7]), 4.0), torch.tensor(0.0))
    torch.testing.assert_close(intensity_loss(torch.tensor([0.75]), 4.0), torch.tensor(0.75))  # >= threshold
    # batch mean; per-sample scales (thresholds 0.5, 0.75)
    torch.testing.assert_close(intensity_loss(torch.tensor([0.6, 0.7]), torch.tensor([1.0, 4.0])),
                               torch.tensor(0.3))
    beta = torch.tensor([0.6, 0.7], requires_grad=True)
    intensity_loss(beta, torch.tensor([1.0, 4.0])).backward()
    assert beta.grad.tolist() == [0.5, 0.0]
    assert LAMBDA_BETA == 2e-4
    with pytest.raises(ValueError):
        intensity_loss(None, 2.0)


# --------------------------------------------------------------------------- with every upsampler


@pytest.mark.parametrize("upsampler", ["liif", "lte", "metasr"])
@pytest.mark.parametrize("extractor", ["baseline", "tadt"])
def test_every_upsampler_with_baseline_and_tadt(upsampler, extractor):
    from upsamplers import create_model
    from upsamplers.coords import make_coord

    torch.manual_seed(0)
    model = create_model(upsampler, extractor, extractor_args=SMALL)
    assert isinstance(model.encoder, EXTRACTORS.get(extractor))
    inp = torch.randn(2, 3, 10, 12)
    hr = (25, 30)  # x2.5
    coord = make_coord(hr).unsqueeze(0).expand(2, -1, -1)[:, ::7]
    cell = torch.tensor([2 / hr[0], 2 / hr[1]]).expand_as(coord)
    model.train()
    out = model(inp, coord, cell, scale=torch.tensor([2.5, 2.5]))
    assert out.shape == (2, coord.shape[1], 3)
    out.mean().backward()
    model.eval()
    with torch.no_grad():
        pred = model.predict(inp, coord, cell, chunk=50)  # scale derived from the cell
    assert pred.shape == out.shape and torch.isfinite(pred).all()
    if extractor == "tadt":
        torch.testing.assert_close(model.encoder.last_routing.beta,
                                   model.encoder.tarc.intensity(torch.tensor([2.5, 2.5])), rtol=1e-5, atol=1e-5)
