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
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = ROOT / "config" / "default.yaml"
EXPERIMENTS = ROOT / "config" / "experiments.yaml"

# The schema's defaults of `pairs` (config/schema.yaml), for a config that names none.
DEFAULT_PAIR_EXTRACTORS = ("edsr-baseline", "rdn", "rcan", "nlsa", "swinir", "cat-r-2", "baseline", "tadt")
DEFAULT_PAIR_UPSAMPLERS = ("metasr", "liif", "lte")
# train settings only the workflow reads (rules/train.smk's retries): not part of any run
# spec or job slice, so changing them retrains nothing
WORKFLOW_TRAIN_KEYS = ("max_resubmissions",)

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


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """One line for a YAML error: line and column (1-based) and what is wrong there."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if mark is None and isinstance(getattr(exc, "position", None), int):  # a ReaderError
        pos = exc.position
        where = f"line {text.count(chr(10), 0, pos) + 1}, column {pos - text.rfind(chr(10), 0, pos)}"
        char = getattr(exc, "character", None)
        if isinstance(char, (int, str)):
            problem = f"character #x{char if isinstance(char, int) else ord(char):04x}: {problem}"
    context = getattr(exc, "context", None)
    text = " ".join(str(problem or exc).split())
    if context:
        text += f" ({' '.join(str(context).split())})"
    return f"{where}: {text}" if where else text


def _read_yaml(path: str | Path) -> dict:
    """A YAML file, or an inline mapping (``{...}``, as the workflow passes job slices)."""
    if isinstance(path, str) and path.lstrip().startswith("{"):
        try:
            data = yaml.safe_load(path)
        except yaml.YAMLError as exc:
            raise HarnessError(f"inline config is not valid YAML/JSON at {_yaml_problem(exc, path)}") from None
        if not isinstance(data, dict):
            raise HarnessError("inline config must be a mapping")
        return data
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"config file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise HarnessError(f"config file {path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} "
                           f"on line {line} (save it as UTF-8)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HarnessError(f"config file {path} is not valid YAML at {_yaml_problem(exc, text)}") from None
    except RecursionError:
        raise HarnessError(f"config file {path} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HarnessError(f"config file {path} must hold a mapping at the top level")
    return data


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def _validator(job: bool = False):
    """The schema's validator; a job slice (``job`` set) is partial: nothing required, no defaults."""
    import jsonschema
    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    base = Draft202012Validator
    if job:
        return base(_without_required(schema)), jsonschema
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
    """Validate ``cfg`` in place (filling defaults) and return it; one clear error otherwise.

    A job slice (a config with ``job`` set, made by the workflow) is validated as it
    is: it holds only the settings one job depends on, so nothing is required and no
    default is filled in.
    """
    _check_finite(cfg)
    job = "job" in cfg
    validator, _ = _validator(job)
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
    if not job:
        _check_semantics(cfg)
    return cfg


def _check_finite(node: Any, where: str = "") -> None:
    """YAML reads .nan and .inf as floats; no setting of ours means either."""
    if isinstance(node, float) and not math.isfinite(node):
        raise HarnessError(f"bad config value at {where or '(top level)'}: {node} is not a finite number")
    if isinstance(node, Mapping):
        for k, v in node.items():
            _check_finite(v, f"{where}/{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, f"{where}/{i}")


def _check_names(section: str, names: Iterable[str], known: list[str], family: str) -> None:
    for name in names:
        if name not in known:
            raise HarnessError(f"bad config value at {section}: unknown {family} {name!r} "
                               f"(known: {', '.join(known)})")


def _check_semantics(cfg: dict) -> None:
    train = cfg["train"]
    if train["scale_max"] < train["scale_min"]:
        raise HarnessError("bad config value at train/scale_max: must be >= train/scale_min")
    from extractors import extractor_names
    from upsamplers import upsampler_names

    exts, ups = extractor_names(), upsampler_names()
    _check_names("extractors", cfg["extractors"], exts, "extractor")
    _check_names("upsamplers", cfg["upsamplers"], ups, "upsampler")
    _check_names("pairs/extractors", pair_extractors(cfg), exts, "extractor")
    _check_names("pairs/upsamplers", pair_upsamplers(cfg), ups, "upsampler")
    from harness import released

    released.check_config(cfg, pair_runs(cfg))
    ids = [c["id"] for c in cfg["experiments"]["claims"]]
    if len(ids) != len(set(ids)):
        raise HarnessError("bad config value at experiments/claims: claim ids must be unique")
    # Any run or extractor the harness knows may carry an override, also one that this
    # config's `pairs` leaves out (it then simply has no effect); typos still stop.
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
    if "job" in cfg:  # a job slice made by the workflow: complete for its job as it is
        return validate_config(cfg)
    if with_default is None:
        with_default = "profile" not in cfg
    if with_default:
        cfg = deep_merge(_read_yaml(DEFAULT_CONFIG), cfg)
    cfg["experiments"] = deep_merge(_read_yaml(EXPERIMENTS), cfg.get("experiments") or {})
    cfg = validate_config(cfg)
    if cfg["profile"] == "released":  # only the tables released weights fill (harness.released)
        from harness.released import restrict_manifest

        restrict_manifest(cfg)
    return cfg


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


def pair_extractors(cfg: dict) -> list[str]:
    return list(cfg.get("pairs", {}).get("extractors", DEFAULT_PAIR_EXTRACTORS))


def pair_upsamplers(cfg: dict) -> list[str]:
    return list(cfg.get("pairs", {}).get("upsamplers", DEFAULT_PAIR_UPSAMPLERS))


def pair_runs(cfg: dict) -> list[str]:
    """Every extractor x upsampler pair, extractor-major (the training order)."""
    return [f"{e}-{u}" for e in pair_extractors(cfg) for u in pair_upsamplers(cfg)]


def ablation_runs(cfg: dict) -> list[str]:
    if "tadt-liif" not in pair_runs(cfg) or "released" in cfg:
        return []
    return [f"tadt-liif-{a}" for a in cfg.get("tadt", {}).get("ablations", [])]


def run_names(cfg: dict) -> list[str]:
    """The runs of this configuration; at profile released, the released runs whose file is there."""
    if "released" in cfg:
        from harness.released import runs_with_files

        present = runs_with_files(cfg)
        return [r for r in pair_runs(cfg) if r in present]
    return pair_runs(cfg) + ablation_runs(cfg)


def _split(name: str, cfg: dict) -> tuple[str, str, str | None]:
    for run in pair_runs(cfg):
        if name == run:
            ext, up = _pair_parts(run, cfg)
            return ext, up, None
    for ab in ABLATIONS:
        if name == f"tadt-liif-{ab}" and name in ablation_runs(cfg):  # needs only tadt.ablations
            return "tadt", "liif", ab
    raise HarnessError(f"unknown run {name!r}; runs in this config: {', '.join(run_names(cfg))}")


def run_parts(cfg: dict, name: str) -> tuple[str, str]:
    """(extractor, upsampler) of a run of this config (needs only `pairs` and `tadt.ablations`)."""
    ext, up, _ = _split(name, cfg)
    return ext, up


def _pair_parts(run: str, cfg: dict) -> tuple[str, str]:
    for up in pair_upsamplers(cfg):
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
    train = {k: v for k, v in cfg["train"].items() if k not in ("overrides", *WORKFLOW_TRAIN_KEYS)}
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


def results_dir(cfg: dict) -> Path:
    return Path(cfg.get("results", "results"))


def checkpoint_path(cfg: dict, run: str) -> Path:
    """Where ``run``'s checkpoint is: written by training, or at profile released its released file."""
    if "released" in cfg:
        from harness.released import checkpoint

        return checkpoint(cfg, run)
    return results_dir(cfg) / "checkpoints" / f"{run}.pth"
