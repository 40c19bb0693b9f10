"""Configuration: loading, schema validation with defaults, and run specs.

The Snakefile and every verb read the configuration through this module, so a
run means the same thing everywhere. ``load_config`` merges the given YAML files
(later files override earlier ones key by key, as Snakemake's ``--configfile``
does), validates the result against ``config/schema.yaml`` and fills defaults.
``run_spec(cfg, name)`` resolves a run name into everything needed to train it.

Run names: ``{extractor}-{upsampler}`` for the 18 pairs, and
``tadt-liif-beta0.5``, ``tadt-liif-beta0.25s``, ``tadt-liif-nolbeta`` for the
ablations of Tables 4 and 5. Every ``tadt-*`` run starts from the checkpoint of
the Baseline run with the same upsampler (the paper fine-tunes TADT from a
trained Baseline).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = ROOT / "config" / "default.yaml"

ABLATIONS = {
    # name: (extractor argument overrides, lambda override)
    "beta0.5": ({"beta_mode": "fixed"}, None),
    "beta0.25s": ({"beta_mode": "linear"}, None),
    "nolbeta": ({}, 0.0),
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """``over`` wins key by key; nested mappings are merged, lists are replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HarnessError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HarnessError(f"config file {path} must hold a mapping at the top level")
    return data


def _validator():
    import jsonschema
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    cls = validators.extend(base, {"properties": set_defaults})
    return cls(schema), jsonschema


def _where(error) -> str:
    path = "/".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate_config(cfg: dict) -> dict:
    """Validate ``cfg`` in place (filling defaults) and return it; one clear error otherwise."""
    validator, _ = _validator()
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            msg = f"unknown key in config at {_where(err)}: {err.message}"
        else:
            msg = f"bad config value at {_where(err)}: {err.message}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise HarnessError(msg + more)
    # Run the validator a second time: defaults filled inside defaults are checked too.
    for err in validator.iter_errors(cfg):
        raise HarnessError(f"bad config value at {_where(err)}: {err.message}")
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict) -> None:
    train = cfg["train"]
    if train["scale_max"] < train["scale_min"]:
        raise HarnessError("bad config value at train/scale_max: must be >= train/scale_min")
    # Any run or extractor the harness knows may carry an override, also one that this
    # config's `pairs` leaves out (it then simply has no effect); typos still stop.
    from extractors import extractor_names
    from upsamplers import upsampler_names

    exts, ups = extractor_names(), upsampler_names()
    known = set(exts) | {f"{e}-{u}" for e in exts for u in ups} | {f"tadt-liif-{a}" for a in ABLATIONS}
    for name in list(train.get("overrides", {})):
        if name not in known:
            raise HarnessError(f"bad config value at train/overrides/{name}: no such run or extractor "
                               f"(extractors: {', '.join(exts)}; runs: <extractor>-<upsampler> with "
                               f"upsamplers {', '.join(ups)}, and tadt-liif-<ablation>)")


def load_config(*sources: str | Path | Mapping[str, Any], with_default: bool | None = None) -> dict:
    """Merge ``sources`` (files or mappings, later ones win), then validate and fill defaults.

    A complete configuration (one that names its ``profile``, such as
    ``config/paper.yaml``) stands alone; a partial one (for example a few
    ``--config key=value`` overrides) is merged over ``config/default.yaml``.
    """
    cfg: dict = {}
    for src in sources:
        cfg = deep_merge(cfg, src if isinstance(src, Mapping) else _read_yaml(src))
    if with_default is None:
        with_default = "profile" not in cfg
    if with_default:
        cfg = deep_merge(_read_yaml(DEFAULT_CONFIG), cfg)
    return validate_config(cfg)


# --------------------------------------------------------------------------- runs

@dataclass
class RunSpec:
    name: str
    extractor: str
    upsampler: str
    extractor_args: dict
    upsampler_args: dict
    train: dict
    lam: float = 0.0
    alpha: list = field(default_factory=lambda: [0.25, 0.25, 0.5])
    init_from: str | None = None

    @property
    def model_spec(self) -> dict:
        return {"extractor": self.extractor, "upsampler": self.upsampler,
                "extractor_args": self.extractor_args, "upsampler_args": self.upsampler_args}

    def as_dict(self) -> dict:
        return asdict(self)


def pair_runs(cfg: dict) -> list[str]:
    pairs = cfg.get("pairs", {})
    exts = pairs.get("extractors", ["edsr-baseline", "rdn", "rcan", "swinir", "baseline", "tadt"])
    ups = pairs.get("upsamplers", ["metasr", "liif", "lte"])
    return [f"{e}-{u}" for e in exts for u in ups]


def ablation_runs(cfg: dict) -> list[str]:
    if "tadt-liif" not in pair_runs(cfg):
        return []
    return [f"tadt-liif-{a}" for a in cfg["tadt"].get("ablations", [])]


def run_names(cfg: dict) -> list[str]:
    return pair_runs(cfg) + ablation_runs(cfg)


def _split(name: str, cfg: dict) -> tuple[str, str, str | None]:
    for run in pair_runs(cfg):
        if name == run:
            ext, up = _pair_parts(run, cfg)
            return ext, up, None
    for ab in ABLATIONS:
        if name == f"tadt-liif-{ab}" and name in ablation_runs(cfg):
            return "tadt", "liif", ab
    raise HarnessError(f"unknown run {name!r}; runs in this config: {', '.join(run_names(cfg))}")


def _pair_parts(run: str, cfg: dict) -> tuple[str, str]:
    for up in cfg.get("pairs", {}).get("upsamplers", ["metasr", "liif", "lte"]):
        if run.endswith("-" + up):
            return run[: -len(up) - 1], up
    raise HarnessError(f"cannot split run name {run!r}")


def extractor_args(cfg: dict, extractor: str) -> dict:
    """Constructor arguments of ``extractor``; TADT inherits the Baseline's widths."""
    args = dict(cfg["extractors"].get(extractor) or {})
    if extractor == "tadt":
        args = {**(cfg["extractors"].get("baseline") or {}), **args}
    return args


def run_spec(cfg: dict, name: str) -> RunSpec:
    ext, up, ablation = _split(name, cfg)
    train = {k: v for k, v in cfg["train"].items() if k != "overrides"}
    lam = 0.0
    init_from = None
    ext_args = extractor_args(cfg, ext)
    if ext == "tadt":
        train.update(cfg["tadt"].get("finetune", {}))
        lam = float(cfg["tadt"]["lambda"])
        init_from = f"baseline-{up}"
    if ablation:
        arg_over, lam_over = ABLATIONS[ablation]
        ext_args = {**ext_args, **arg_over}
        if lam_over is not None:
            lam = lam_over
    overrides = cfg["train"].get("overrides", {})
    train.update(overrides.get(ext, {}))   # every run of the extractor
    train.update(overrides.get(name, {}))  # this run
    return RunSpec(name=name, extractor=ext, upsampler=up, extractor_args=ext_args,
                   upsampler_args=dict(cfg["upsamplers"].get(up) or {}), train=train, lam=lam,
                   alpha=list(cfg["tadt"]["alpha"]), init_from=init_from)


def runs_for(cfg: dict, extractors: Iterable[str] | None = None,
             upsamplers: Iterable[str] | None = None) -> list[str]:
    out = []
    for name in pair_runs(cfg):
        e, u = _pair_parts(name, cfg)
        if (extractors is None or e in extractors) and (upsamplers is None or u in upsamplers):
            out.append(name)
    return out


def results_dir(cfg: dict) -> Path:
    return Path(cfg.get("results", "results"))


def checkpoint_path(cfg: dict, run: str) -> Path:
    return results_dir(cfg) / "checkpoints" / f"{run}.pth"
