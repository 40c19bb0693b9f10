"""The paper's Figures 1, 2 and 7 (PNG through matplotlib's Agg backend).

Each figure is built in two steps: its data (a DataFrame, also written as CSV
beside the PNG so the report and the regression check can read numbers, not
pixels) and its plot.

What each figure reads comes from the experiment manifest
(config/experiments.yaml, key figures):

- Figure 1: PSNR vs GFLOPs of each extractor of Table 3 with its upsampler, one
  panel per scale, disc area proportional to the extractor's parameters. PSNR
  from the evaluations of Table 1's dataset, GFLOPs and parameters from Table 3.
- Figure 2: GFLOPs of the named extractors/runs (SwinIR and TADT) on one image
  at the figure's scales (TADT's routing, hence its cost, depends on the scale).
- Figure 7: the intensity scalar beta predicted by each trained TARC against the
  scale, for TADT trained with and without L_beta.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from harness import experiments as X
from harness.errors import HarnessError
from harness.io import atomic_path
from harness.scales import format_scale, scale_label
from harness.tables import mean_psnr

LABELS = {"edsr-baseline": "EDSR-baseline", "rdn": "RDN", "rcan": "RCAN", "swinir": "SwinIR",
          "baseline": "Baseline", "tadt": "TADT", "tadt-liif": "TADT (w L_beta)",
          "tadt-liif-nolbeta": "TADT (w/o L_beta)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    _pyplot().close(fig)


def _note(cfg: dict) -> str:
    if cfg["profile"] == "paper":
        return "paper profile"
    return f"{cfg['profile']} profile: NOT the paper's numbers"


# --------------------------------------------------------------------------- Figure 1

def figure1_data(cfg: dict, table3: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    f1 = X.figure(cfg, "figure1")
    ds = X.table(cfg, f1["psnr_table"])["datasets"][0]
    rows = []
    for _, r in table3.iterrows():
        ext, up = r["extractor"], r["upsampler"]
        for s in f1["scales"]:
            col = f"gflops_{scale_label(s)}"
            if col not in table3.columns:
                raise HarnessError(f"Figure 1 needs GFLOPs at {scale_label(s)}: add {format_scale(s)} to "
                                   f"experiments/tables/{f1['table']}/scales")
            rows.append({"profile": cfg["profile"], "dataset": ds, "extractor": ext, "scale": float(s),
                         "psnr": mean_psnr(evals, f"{ext}-{up}", ds, s),
                         "gflops": float(r[col]), "params_m": float(r["params_m"])})
    if not rows:
        raise HarnessError(f"Figure 1: {f1['table']} has no rows")
    return pd.DataFrame(rows)


def plot_figure1(data: pd.DataFrame, cfg: dict, out) -> None:
    plt = _pyplot()
    scales = sorted(data["scale"].unique())
    fig, axes = plt.subplots(1, len(scales), figsize=(5.5 * len(scales), 4.5), squeeze=False)
    biggest = float(data["params_m"].max()) or 1.0
    for ax, s in zip(axes[0], scales):
        d = data[data["scale"] == s]
        for i, (_, r) in enumerate(d.iterrows()):
            ax.scatter(r["gflops"], r["psnr"], s=1500 * r["params_m"] / biggest, alpha=0.5,
                       color=f"C{i}", edgecolors="black", linewidths=0.5)
            pm = r["params_m"]
            size = f"{pm:.2f}M" if pm >= 0.1 else f"{pm:.3g}M"
            ax.annotate(f"{LABELS.get(r['extractor'], r['extractor'])}\n{size}",
                        (r["gflops"], r["psnr"]), ha="center", va="center", fontsize=7)
        ax.set_xlabel("GFLOPs (feature extractor)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"({chr(ord('a') + scales.index(s))}) {scale_label(s)}, {d['dataset'].iloc[0]}")
        ax.margins(0.15)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{X.figure(cfg, 'figure1')['title']} ({_note(cfg)})", fontsize=10)
    _save(fig, out)


# --------------------------------------------------------------------------- Figure 2

def figure2_data(cfg: dict, flops: pd.DataFrame) -> pd.DataFrame:
    f2 = X.figure(cfg, "figure2")
    index = int(f2.get("image", 0))
    rows = []
    for name in _figure2_names(cfg):
        d = flops[flops["name"] == name]
        images = list(dict.fromkeys(d["image"]))
        if index >= len(images):
            raise HarnessError(f"Figure 2: experiments/figures/figure2/image = {index} but the FLOPs CSV of "
                               f"{name} holds {len(images)} image(s)")
        image = images[index]
        for s in f2["scales"]:
            sel = d[(d["image"] == image) & ((d["scale"] - float(s)).abs() < 1e-6)]
            if sel.empty:
                raise HarnessError(f"Figure 2: no FLOPs for {name} on {image} at {scale_label(s)}")
            r = sel.iloc[0]
            rows.append({"profile": cfg["profile"], "dataset": f2["dataset"], "image": image,
                         "h": int(r["h"]) if "h" in r else None, "w": int(r["w"]) if "w" in r else None,
                         "name": name, "scale": float(s), "gflops": float(r["gflops"])})
    return pd.DataFrame(rows)


def _figure2_names(cfg: dict) -> list[str]:
    """The manifest's names as the FLOPs CSVs are named (an extractor, or a routed run)."""
    return [n for n, _ in X.figure_inputs(cfg, "figure2")["flops"]]


def plot_figure2(data: pd.DataFrame, cfg: dict, out) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    scales = sorted(data["scale"].unique())
    names = list(dict.fromkeys(data["name"]))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        d = data[data["name"] == name].set_index("scale").reindex(scales)
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(scales))]
        bars = ax.bar(xs, d["gflops"], width, label=LABELS.get(name, name))
        ax.bar_label(bars, labels=[f"{v:.2f}" if v >= 1 else f"{v:.3g}" for v in d["gflops"]], fontsize=6)
    ax.set_xticks(range(len(scales)), [scale_label(s) for s in scales])
    ax.set_xlabel("SR scale")
    ax.set_ylabel("GFLOPs (feature extractor)")
    first = data.iloc[0]
    size = f", {int(first['w'])}x{int(first['h'])} LR" if pd.notna(first.get("h")) else ""
    ax.set_title(f"{X.figure(cfg, 'figure2')['title']}: {first['image']} ({first['dataset']}{size})\n{_note(cfg)}", fontsize=9)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    _save(fig, out)


# --------------------------------------------------------------------------- Figure 7

def tarc_beta(model, scale: float) -> float:
    """beta of the trained TARC at ``scale`` (the scale branch reads only the scale)."""
    import torch

    enc = model.encoder
    s = torch.tensor([float(scale)], dtype=torch.float32)
    tarc = getattr(enc, "tarc", None)
    with torch.no_grad():
        if tarc is not None and hasattr(tarc, "intensity"):
            return float(tarc.intensity(s)[0])
        # Fallback: a forward on a small grey LR image, then the routing it recorded.
        inp = torch.zeros(1, 3, 48, 48)
        enc(inp, scale=s)
        info = getattr(enc, "last_routing", None)
        if info is None or info.beta is None:
            raise HarnessError("Figure 7: this checkpoint's extractor has no TARC (no beta)")
        return float(info.beta[0])


def figure7_data(cfg: dict, checkpoints: Mapping[str, str | Path]) -> pd.DataFrame:
    from harness.checkpoint import load_model

    scales = X.figure(cfg, "figure7")["scales"]
    rows = []
    for run, path in checkpoints.items():
        if not Path(path).is_file():
            raise HarnessError(f"Figure 7: checkpoint {path} ({run}) does not exist")
        model, _ = load_model(path)
        for s in scales:
            rows.append({"profile": cfg["profile"], "run": run, "scale": float(s),
                         "beta": tarc_beta(model, s)})
    return pd.DataFrame(rows)


def plot_figure7(data: pd.DataFrame, cfg: dict, out) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, d in data.groupby("run", sort=False):
        d = d.sort_values("scale")
        ax.plot(d["scale"], d["beta"], marker="o", label=LABELS.get(run, run))
    ax.set_xlabel("SR scale s")
    ax.set_ylabel("predicted beta")
    ax.set_title(f"{X.figure(cfg, 'figure7')['title']} ({_note(cfg)})", fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out)


def write_data(data: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        data.to_csv(tmp, index=False, float_format="%.6f")
