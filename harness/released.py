"""The released-weights tier: the reference repositories' own checkpoints, evaluated
on the paper's datasets into Tables 1-2 (profile ``released``, config/released.yaml).

A folder (``released.folder``) holds one file per run, named ``<run>.pth``
(``edsr-baseline-liif.pth``, ``rdn-lte.pth``, ...), for runs of ``released.runs``:
the runs whose checkpoints the LIIF and LTE repositories publish. The workflow
lists the folder when it parses the Snakefile (:func:`with_present`: names only,
nothing is read or written), and every table row whose file is there is
evaluated with the same protocol code as our runs (``python -m harness evaluate
--released RUN``); rows whose file is absent are left out. A ``.pth`` file
named for no released run stops the workflow before any job, with its name.

Each evaluation first checks (:func:`expectation`, before the model is built)
that the file is a LIIF/LTE release (never a checkpoint this harness trained)
of the run it is named for, at this profile's widths (the paper's): the
extractor, the upsampler and every constructor argument, defaults filled in.

Every table, figure and claim of the manifest that is not among
``released.tables`` is dropped from the configuration (:func:`restrict_manifest`),
so the workflow's ``all`` is those tables and the report; their rows say
``profile = released``.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError

PROFILE = "released"
SUFFIX = ".pth"


def is_released(cfg: dict) -> bool:
    return cfg.get("profile") == PROFILE


# --------------------------------------------------------------------------- configuration

def check_config(cfg: dict, pair_runs: list[str]) -> None:
    """One line for a ``released`` section that cannot work (called by config validation)."""
    from harness.config import run_parts
    from harness.release_format import RELEASE_EXTRACTORS, RELEASE_UPSAMPLERS

    section = cfg.get("released")
    if is_released(cfg) != (section is not None):
        raise HarnessError("bad config value at released: the `released` section belongs to profile "
                           "released (config/released.yaml) and that profile needs it")
    if section is None:
        return
    for run in section["runs"]:
        if run not in pair_runs:
            raise HarnessError(f"bad config value at released/runs: {run!r} is not a pair of `pairs` "
                               "(which orders the rows)")
        ext, up = run_parts(cfg, run)
        if ext not in RELEASE_EXTRACTORS or up not in RELEASE_UPSAMPLERS:
            raise HarnessError(f"bad config value at released/runs: {run!r} cannot be a LIIF/LTE "
                               f"release (extractors {', '.join(RELEASE_EXTRACTORS)}; upsamplers "
                               f"{', '.join(RELEASE_UPSAMPLERS)})")
    stray = [r for r in section.get("present", []) if r not in section["runs"]]
    if stray:
        raise HarnessError(f"bad config value at released/present: {stray[0]!r} is not in released/runs")
    tables = cfg["experiments"]["tables"]
    for name in section["tables"]:
        values = tables[name]["values"] if name in tables else None
        if values != ["psnr"] or tables[name]["rows"] != "pairs":
            raise HarnessError(f"bad config value at released/tables: {name} is not a PSNR table of "
                               "extractor x upsampler pairs (released weights fill only those)")


def restrict_manifest(cfg: dict) -> dict:
    """Keep only ``released.tables`` and the claims on them; no figures."""
    keep = set(cfg["released"]["tables"])
    ex = cfg["experiments"]
    ex["tables"] = {k: v for k, v in ex["tables"].items() if k in keep}
    ex["figures"] = {}
    ex["claims"] = [c for c in ex["claims"]
                    if set(c["sources"]) <= keep and c.get("published_source") in (None, *keep)]
    return cfg


def runs_with_files(cfg: dict) -> list[str]:
    """The released runs this configuration evaluates: those found in the folder, else all."""
    section = cfg.get("released") or {}
    return list(section.get("present", section.get("runs", [])))


def folder(cfg: dict) -> Path:
    return Path(cfg["released"]["folder"])


def checkpoint(cfg: dict, run: str) -> Path:
    return folder(cfg) / f"{run}{SUFFIX}"


# --------------------------------------------------------------------------- the folder

def scan(cfg: dict) -> list[str]:
    """The released runs whose ``<run>.pth`` is in the folder, in ``released.runs`` order.

    Reads names only. One line if the folder is missing, holds no such file, or
    holds a ``.pth`` named for no released run. Other files (notes, checksums) are ignored.
    """
    where, runs = folder(cfg), list(cfg["released"]["runs"])
    expected = f"name each file <run>{SUFFIX}, runs: {', '.join(runs)}"
    if not where.is_dir():
        raise HarnessError(f"released checkpoint folder {where} does not exist or is not a folder "
                           f"(put the released files there; {expected})")
    files = sorted(p for p in where.iterdir() if p.suffix == SUFFIX and not p.name.startswith("."))
    unknown = [p.name for p in files if p.stem not in runs]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise HarnessError(f"{where / unknown[0]}{more} is named for no released run ({expected})")
    for p in files:
        if not p.is_file():
            raise HarnessError(f"{p} is not a file")
    present = [r for r in runs if where / f"{r}{SUFFIX}" in files]
    if not present:
        raise HarnessError(f"released checkpoint folder {where} holds no released checkpoint ({expected})")
    return present


def with_present(cfg: dict) -> dict:
    """``cfg`` with ``released.present`` set to the runs whose file is in the folder."""
    out = copy.deepcopy(cfg)
    out["released"]["present"] = scan(cfg)
    return out


# --------------------------------------------------------------------------- one file

def expected_spec(cfg: dict, run: str) -> dict:
    """Our model spec of released ``run`` at this configuration's widths."""
    from harness.config import extractor_args, run_parts

    runs = (cfg.get("released") or {}).get("runs")
    if runs is None:
        raise HarnessError(f"--released {run}: this configuration has no released runs "
                           "(use the released profile, config/released.yaml)")
    if run not in runs:
        raise HarnessError(f"--released {run}: not a released run of this configuration "
                           f"(runs: {', '.join(runs)})")
    ext, up = run_parts(cfg, run)
    return {"extractor": ext, "upsampler": up, "extractor_args": extractor_args(cfg, ext),
            "upsampler_args": dict(cfg["upsamplers"].get(up) or {})}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def resolved_args(factory: Callable, args: dict) -> dict:
    """The constructor arguments ``factory(**args)`` runs with: defaults filled in, sequences as lists."""
    params = inspect.signature(factory).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(args)
    return _plain(out)


def _differences(factory: Callable, got: dict, want: dict) -> list[str]:
    a, b = resolved_args(factory, got), resolved_args(factory, want)
    return [f"{k} {a.get(k)!r} (file) vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def expectation(cfg: dict, run: str) -> Callable[[dict], None]:
    """``expect`` for :func:`harness.checkpoint.load_model`: the file must be a LIIF/LTE release
    of ``run`` at this configuration's widths; raises one line otherwise."""
    from extractors import EXTRACTORS, extractor_names
    from harness.checkpoint import FORMAT, RELEASE_FORMAT
    from upsamplers import UPSAMPLERS, upsampler_names

    want = expected_spec(cfg, run)
    extractor_names(), upsampler_names()  # every module registered

    def expect(meta: dict) -> None:
        path, got = meta["path"], meta["spec"]
        if meta["format"] != RELEASE_FORMAT:
            what = "a checkpoint trained by this harness" if meta["format"] == FORMAT else "not a release"
            raise HarnessError(f"{path} is {what} ({meta['format']}), not a released LIIF/LTE file: "
                               "the released tier evaluates only the reference repositories' files")
        if (got["extractor"], got["upsampler"]) != (want["extractor"], want["upsampler"]):
            raise HarnessError(f"{path} is named for {run} but holds {got['upsampler']} on "
                               f"{got['extractor']}")
        diffs = [f"extractor {d}" for d in _differences(EXTRACTORS.get(want["extractor"]),
                                                         got["extractor_args"], want["extractor_args"])]
        diffs += [f"upsampler {d}" for d in _differences(UPSAMPLERS.get(want["upsampler"]),
                                                         got["upsampler_args"], want["upsampler_args"])]
        if diffs:
            raise HarnessError(f"{path} holds {run} at other widths than this profile's: "
                               + "; ".join(diffs[:5]) + (f"; ... {len(diffs) - 5} more" if len(diffs) > 5 else ""))

    return expect
