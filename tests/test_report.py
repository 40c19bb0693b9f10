"""The report's note on the cells the paper leaves empty (Table 1's out-of-memory NLSA x2):
which cells, the measured evaluation memory from the memory CSV, which cells ours fill."""
from __future__ import annotations

import pandas as pd

from harness import report as rep
from harness.config import ROOT, load_config

PAPER = ROOT / "paper"
SCALES = ["x2", "x3", "x4", "x6", "x12", "x18", "x24", "x30"]


def memory_csv(path, rows):
    cols = list(rep.MEMORY_COLUMNS)
    pd.DataFrame([{c: r.get(c, "") for c in cols} for r in rows], columns=cols).to_csv(path, index=False)
    return path


NLSA_X2 = {"extractor": "nlsa", "upsampler": "liif", "scale": 2, "hr": "2040x1356", "tile": 0, "overlap": 0,
           "device": "cpu", "threads": 1, "seconds": 812.4, "peak_rss_mib": 8123, "gpu_peak_mib": ""}


def note_of(inp, name="table1"):
    """The report's note under a table, as one string (the note and its blank line)."""
    lines = rep.empty_cells_note(inp, name)
    assert len(lines) == 2 and lines[1] == "" and lines[0].startswith("> ")
    return lines[0]


def table1(path, extractors, cfg):
    rows = [{"profile": cfg["profile"], "dataset": "div2k-valid", "upsampler": u, "extractor": e,
             **{s: 30.0 for s in SCALES}} for u in ("metasr", "liif", "lte") for e in extractors]
    path.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path / "table1.csv", index=False)
    return path


def test_note_names_the_empty_cells_and_the_measured_memory(tmp_path):
    cfg = load_config()  # the embedded default: no NLSA among its extractors
    mem = memory_csv(tmp_path / "mem.csv", [NLSA_X2, {**NLSA_X2, "scale": 30, "peak_rss_mib": 999},
                                            {**NLSA_X2, "extractor": "rdn", "peak_rss_mib": 777}])
    inp = rep.load_inputs(tmp_path / "none", PAPER, None, cfg, mem)
    note = note_of(inp)
    assert note.startswith('> **Cells the paper leaves empty** ("-": out of memory (OOM)')
    assert "nlsa x2 (metasr, liif, lte)." in note
    assert ("nlsa x2: 8123 MiB peak resident memory on the CPU for one 2040x1356 output "
            "(LIIF, untiled, 1 CPU thread, 812 s)") in note
    assert "999" not in note and "777" not in note  # other scales and extractors are not cited
    assert note.endswith("Our table is not in this results folder "
                         "(nlsa not among this configuration's extractors, `pairs.extractors`).")
    inp = rep.load_inputs(table1(tmp_path / "res", ["edsr-baseline", "tadt"], cfg), PAPER, None, cfg, mem)
    note = note_of(inp)
    assert note.endswith("Our table fills 0 of these 3 cells "
                         "(nlsa not among this configuration's extractors, `pairs.extractors`).")
    # Table 2's and Table 3's '-' cells have no stated reason in the manifest: no note.
    assert rep.empty_cells_note(inp, "table2") == [] and rep.empty_cells_note(inp, "table3") == []


def test_note_counts_the_cells_ours_fill_and_says_when_nothing_was_measured(tmp_path):
    cfg = load_config(ROOT / "config" / "embedded-all.yaml")
    res = table1(tmp_path / "res", ["edsr-baseline", "nlsa", "tadt"], cfg)
    gpu = {**NLSA_X2, "device": "cuda", "threads": 8, "seconds": 2.0, "peak_rss_mib": "", "gpu_peak_mib": 4096,
           "note": "after a warm-up image"}
    inp = rep.load_inputs(res, PAPER, None, cfg, memory_csv(tmp_path / "mem.csv", [NLSA_X2, gpu]))
    note = note_of(inp)
    assert note.endswith("Our table fills 3 of these 3 cells.")
    inp_none = rep.load_inputs(tmp_path / "none", PAPER, None, cfg, tmp_path / "mem.csv")
    assert note_of(inp_none).endswith("Our table is not in this results folder.")
    assert ("4096 MiB of GPU memory (cuda) allocated beyond the model for one 2040x1356 output "
            "(LIIF, untiled, 8 CPU threads, 2.0 s; after a warm-up image)") in note
    inp = rep.load_inputs(res, PAPER, None, cfg, memory_csv(tmp_path / "other.csv", [{**NLSA_X2, "scale": 3}]))
    note = note_of(inp)
    assert "nlsa x2: not measured (no row in " in note
    inp = rep.load_inputs(res, PAPER, None, cfg, tmp_path / "absent.csv")
    assert inp.memory is None and any("absent.csv does not exist" in n for n in inp.notes)


def test_report_cites_the_committed_measurement_under_table1(tmp_path):
    """The sentence's number comes from benchmarks/eval_memory.csv, not from the code."""
    mem = pd.read_csv(rep.MEMORY_CSV, comment="#")
    rows = mem[(mem["extractor"] == "nlsa") & (mem["scale"] == 2) & (mem["hr"] == "2040x1356")]
    assert len(rows) >= 1, "benchmarks/eval_memory.csv has no NLSA x2 measurement of a DIV2K-sized image"
    text, _ = rep.build_report(tmp_path / "none", PAPER, None, load_config())
    section = text[text.index("## Table 1"):text.index("## Table 2")]
    for _, r in rows.iterrows():
        peak = r["peak_rss_mib"] if r["device"] == "cpu" else r["gpu_peak_mib"]
        assert f"{peak:.0f} MiB" in section
    assert "nlsa x2 (metasr, liif, lte)" in section
    # the DIV2K-sized measurement is cited first
    assert section.index("for one 2040x1356 output") < section.index("for one 1020x678 output")
