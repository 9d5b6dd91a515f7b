"""Sweep specs: a search space over charrnn's hyperparameters, read from options or a YAML/JSON
file, checked whole, and expanded into the points a sweep runs. Pure functions, no Redis:
`plan` reads the corpora and checks every point as a trainer would.

A spec (what a sweep record stores, and what a sweep file holds):

    name: lr-vs-size                      # optional
    tags: [week1]                         # optional
    corpus: [a.txt, b.txt]                # one path or a list (relative to the file); every
                                          # point runs on each
    fixed: {iterations: 20000}            # the same for every point
    grid: {hidden_size: [64, 128, 256], learning_rate: [0.1, 0.03]}     # every combination
    random:                               # `samples` draws, each crossed with the whole grid
      samples: 8
      seed: 1                             # the same seed gives the same points
      space:
        learning_rate: {log_uniform: [0.001, 0.1]}
        dropout: {uniform: [0.0, 0.5]}
        num_layers: {choice: [1, 2, 3]}
    early_stop: {scheduler: asha, reduction_factor: 3, grace_period: 2000}   # or rungs: [...]
    checkpoint_every: 2000

As in Ray Tune, a random sweep of N samples over a grid of G points runs N x G jobs, on every
corpus. Integer parameters draw integers (uniform: inclusive bounds; log_uniform: rounded);
floats are rounded to 6 significant digits so that tables and labels stay readable.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets

import numpy as np

from charrnn import Config
from charrnn.errors import ConfigError
from charrnn.options import coerce, fields
from worker import asha
from worker.spec import SWEEP_TAG_PREFIX, JobSpec

from . import jobs
from .errors import BadInput
from .sweepfile import SCHEDULERS, SCHEMA, check_schema, param_name, read_file, schema  # noqa: F401  (sweeps.read_file...)

MAX_POINTS = 1000
DISTRIBUTIONS = ("uniform", "log_uniform", "choice")
DEFAULT_REDUCTION_FACTOR = 3.0

RESERVED_TAG = SWEEP_TAG_PREFIX
"""Every job of a sweep carries the tag sweep:<id>: no user tag may start so."""


FIELDS_BY_NAME = {f.name: f for f in fields(Config)}


def check_tags(tags) -> None:
    JobSpec.check_user_tags(tags or ())  # the one rule, SpecError (bad input) if broken


def _assignment(raw: str, option: str) -> tuple[str, list[str]]:
    """'name=v1,v2' to (name, ['v1', 'v2'])."""
    name, sep, values = raw.partition("=")
    if not sep or not name.strip():
        raise BadInput(f"bad {option} {raw!r}: expected NAME=VALUE[,VALUE...]")
    parts = [v.strip() for v in values.split(",")] if values.strip() else []
    if any(p == "" for p in parts) or not parts:
        raise BadInput(
            f"bad {option} {raw!r}: empty range (give at least one value, no empty ones)"
        )
    return param_name(name), parts


def from_options(
    corpora: tuple[str, ...],
    fixed: dict,
    grid: tuple[str, ...],
    samples: int | None,
    uniform: tuple[str, ...],
    log_uniform: tuple[str, ...],
    choice: tuple[str, ...],
    seed: int | None,
    early_stop: str | None,
    rungs: str | None,
    grace_period: int | None,
    reduction_factor: float | None,
    base: dict | None = None,
) -> dict:
    """The spec the command-line options describe, laid over a sweep file's (options win for
    fixed values; axes add to the file's; a parameter in two places is an error later). fixed
    holds the typed hyperparameter options (a list for a comma list; None when not given)."""
    spec = json.loads(json.dumps(base or {}))  # a deep copy
    if corpora:
        spec["corpus"] = list(corpora)
    _fixed_options(spec, fixed)
    for raw in grid:
        name, values = _assignment(raw, "--grid")
        if name in spec.get("grid", {}):
            raise BadInput(f"--grid {name} is given twice")
        spec.setdefault("grid", {})[name] = values
    _random_options(
        spec, samples, seed, {"uniform": uniform, "log_uniform": log_uniform, "choice": choice}
    )
    _early_stop_options(spec, early_stop, rungs, grace_period, reduction_factor)
    return spec


def _fixed_options(spec: dict, fixed: dict) -> None:
    for name, value in fixed.items():
        if value is None:
            continue
        for part in (
            spec.get("fixed", {}),
            spec.get("grid", {}),
            spec.get("random", {}).get("space", {}),
        ):
            for k in [k for k in part if k.replace("-", "_") == name]:
                del part[k]  # the option wins over the file
        if isinstance(value, list):  # `--hidden-size 64,128` is a grid axis too
            spec.setdefault("grid", {})[name] = value
        else:
            spec.setdefault("fixed", {})[name] = value


def _random_options(
    spec: dict, samples: int | None, seed: int | None, by_distribution: dict[str, tuple[str, ...]]
) -> None:
    """--random N, --seed and the --uniform/--log-uniform/--choice space; values stay text
    until `normalize` types them."""
    space = {}
    for dist, items in by_distribution.items():
        option = "--" + dist.replace("_", "-")
        for raw in items:
            name, values = _assignment(raw, option)
            if name in space:
                raise BadInput(f"{name} has two distributions ({option} and another)")
            if dist != "choice" and len(values) != 2:
                raise BadInput(f"bad {option} {raw!r}: expected NAME=LOW,HIGH")
            space[name] = {dist: values}
    if space and samples is None and "samples" not in spec.get("random", {}):
        raise BadInput("--uniform, --log-uniform and --choice are drawn from: give --random N too")
    if samples is not None and not space and not spec.get("random", {}).get("space"):
        raise BadInput("--random N draws from a space: give --uniform, --log-uniform or --choice")
    if samples is not None or space:
        rnd = spec.setdefault("random", {})
        if samples is not None:
            rnd["samples"] = samples
        rnd.setdefault("space", {}).update(space)
    if seed is not None:
        if "random" not in spec:
            raise BadInput("--seed seeds the random search: give it with --random N")
        spec["random"]["seed"] = seed


def _early_stop_options(
    spec: dict,
    early_stop: str | None,
    rungs: str | None,
    grace_period: int | None,
    reduction_factor: float | None,
) -> None:
    es = dict(spec.get("early_stop") or {})
    if early_stop is not None:
        es["scheduler"] = early_stop
    for key, value in (("grace_period", grace_period), ("reduction_factor", reduction_factor)):
        if value is not None:
            es[key] = value
    if rungs is not None:
        try:
            es["rungs"] = [int(v) for v in rungs.split(",") if v.strip()]
        except ValueError:
            raise BadInput(
                f"bad --rungs {rungs!r}: expected iteration counts such as 2000,6000,18000"
            ) from None
    if es:
        if "scheduler" not in es:
            raise BadInput("--rungs, --grace-period and --reduction-factor need --early-stop asha")
        spec["early_stop"] = es


def _typed(name: str, value):
    """A value of a parameter with charrnn's type for it (YAML may give 64 or "64"): the one
    converter every command line uses."""
    try:
        return coerce(FIELDS_BY_NAME[name], value)
    except ConfigError as e:
        raise BadInput(str(e)) from None


def _numeric(name: str) -> str | None:
    base = FIELDS_BY_NAME[name].base
    return "int" if base is int else "float" if base is float else None


def normalize(spec: dict) -> dict:
    """The spec checked whole, values typed, the random seed fixed (drawn when not given, and
    recorded so the sweep can be repeated): BadInput for the first thing wrong. Nothing here
    reads corpora; `expand` gives the points."""
    check_schema(spec, "sweep")
    check_tags(spec.get("tags"))
    spec = json.loads(json.dumps(spec))
    corpora = spec.get("corpus")
    if not corpora:
        raise BadInput(
            "a sweep needs a corpus (--corpus PATH, repeatable, or `corpus:` in the file)"
        )
    spec["corpus"] = [corpora] if isinstance(corpora, str) else list(corpora)
    if len(set(spec["corpus"])) != len(spec["corpus"]):
        raise BadInput("the same corpus is given twice")
    for part in ("fixed", "grid"):
        _no_double_spelling(spec.get(part) or {}, part)
    _no_double_spelling((spec.get("random") or {}).get("space") or {}, "random.space")
    fixed = {param_name(k): _typed(param_name(k), v) for k, v in (spec.get("fixed") or {}).items()}
    grid = {
        param_name(k): _distinct(param_name(k), values, "grid")
        for k, values in (spec.get("grid") or {}).items()
    }
    space = {}
    if spec.get("random") is not None:
        rnd = spec["random"]
        space = {
            param_name(k): _distribution(param_name(k), dist) for k, dist in rnd["space"].items()
        }
        spec["random"] = {
            "samples": int(rnd["samples"]),
            "space": space,
            "seed": int(rnd["seed"]) if rnd.get("seed") is not None else secrets.randbits(32),
        }
    for a, b, what in (
        (fixed, grid, "fixed and in the grid"),
        (fixed, space, "fixed and in the random space"),
        (grid, space, "in the grid and in the random space"),
    ):
        both = sorted(set(a) & set(b))
        if both:
            raise BadInput(f"{', '.join(both)} is both {what}")
    spec["fixed"], spec["grid"] = fixed, grid
    _normalize_early_stop(spec)
    n = n_points(spec)
    if n > MAX_POINTS:
        raise BadInput(
            f"this sweep has {n:,} points, above the limit of {MAX_POINTS:,}; "
            f"narrow the grid or draw fewer samples"
        )
    return spec


def _distinct(name: str, values: list, where: str) -> list:
    typed = [_typed(name, v) for v in values]
    if len(set(map(repr, typed))) != len(typed):
        raise BadInput(f"{where} {name} repeats a value: {values}")
    return typed


def _distribution(name: str, dist: dict) -> dict:
    """One parameter's distribution, typed and checked: {kind: values}."""
    ((kind, args),) = dist.items()
    if kind == "choice":
        return {"choice": _distinct(name, args, "choice")}
    if _numeric(name) is None:
        raise BadInput(f"{kind} {name}: {name} is not numeric; use a choice")
    lo, hi = (_typed(name, v) for v in args)  # BadInput for "abc", or 1.5 for an int
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise BadInput(f"{kind} {name}: bounds must be finite, got {args}")
    if lo == hi:
        raise BadInput(f"{kind} {name}: empty range [{lo}, {hi}]; fix the value instead")
    if lo > hi:
        raise BadInput(f"{kind} {name}: low {lo} is above high {hi}")
    if kind == "log_uniform" and lo <= 0:
        raise BadInput(f"log_uniform {name}: bounds must be positive, got {args}")
    return {kind: [lo, hi]}


def _normalize_early_stop(spec: dict) -> None:
    es = spec.get("early_stop")
    if es is not None and es["scheduler"] == "none":
        if set(es) - {"scheduler"}:
            raise BadInput("--rungs, --grace-period and --reduction-factor need --early-stop asha")
        spec.pop("early_stop")
    elif es is not None:
        if "rungs" in es and "grace_period" in es:
            raise BadInput("give --rungs or --grace-period, not both")
        if "rungs" in es:
            r = es["rungs"]
            if sorted(set(r)) != r:
                raise BadInput(f"rungs must be distinct and increasing, got {r}")
        es["reduction_factor"] = float(es.get("reduction_factor", DEFAULT_REDUCTION_FACTOR))


def _no_double_spelling(part: dict, where: str) -> None:
    names = [param_name(k) for k in part]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInput(f"{where} gives {', '.join(twice)} twice (as - and _ spellings)")


def n_points(spec: dict) -> int:
    g = math.prod(len(v) for v in spec.get("grid", {}).values())
    s = spec["random"]["samples"] if spec.get("random") else 1
    return len(spec["corpus"]) * g * s


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def draw(space: dict, samples: int, seed: int) -> list[dict]:
    """`samples` points from the random space, the same for the same seed on any machine (NumPy's
    PCG64 stream; parameters drawn in name order, so option order does not matter)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        point = {}
        for name in sorted(space):
            ((kind, args),) = space[name].items()
            if kind == "choice":
                point[name] = args[int(rng.integers(len(args)))]
                continue
            lo, hi = args
            if _numeric(name) == "int":
                if kind == "uniform":
                    point[name] = int(rng.integers(lo, hi + 1))
                else:
                    point[name] = int(
                        min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi))))))
                    )
            elif kind == "uniform":
                point[name] = _round(rng.uniform(lo, hi))
            else:
                point[name] = _round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        out.append(point)
    return out


def expand(spec: dict) -> list[tuple[str, dict]]:
    """Every point of a normalized spec as (corpus, hyperparameters): corpus by corpus, random
    sample by sample, then the grid in the order its axes and values were given."""
    grid = spec.get("grid", {})
    axes = [[(k, v) for v in values] for k, values in grid.items()]
    rnd = spec.get("random")
    drawn = draw(rnd["space"], rnd["samples"], rnd["seed"]) if rnd else [{}]
    out = []
    for corpus in spec["corpus"]:
        for sample in drawn:
            for combo in itertools.product(*axes):
                out.append((corpus, {**spec["fixed"], **sample, **dict(combo)}))
    return out


def plan(spec: dict) -> tuple[dict[str, str], list[tuple[str, Config, int]]]:
    """Read every corpus of a normalized sweep spec and check every point against it, as a
    trainer would; resolve the early-stopping rungs into the spec. Returns (texts by corpus,
    [(corpus, config, total iterations)]). Nothing is stored or enqueued here."""
    texts, points = {}, []
    by_corpus: dict[str, list[dict]] = {}
    for corpus, hyper in expand(spec):
        by_corpus.setdefault(corpus, []).append(hyper)
    for corpus, hypers in by_corpus.items():
        text, configs = jobs.validate(corpus, hypers)
        texts[corpus] = text
        points += [(corpus, cfg, total) for cfg, total in configs]
    es = spec.get("early_stop")
    if es:
        if any(cfg.val_fraction == 0 for _, cfg, _ in points):
            raise BadInput(
                "--early-stop asha ranks jobs by validation loss: val_fraction must "
                "be above 0 for every point"
            )
        longest = max(total for _, _, total in points)
        rungs = es.get("rungs") or asha.default_rungs(
            longest, es["reduction_factor"], es.get("grace_period")
        )
        if not rungs or rungs[0] >= longest:
            raise BadInput(
                f"no early-stopping rung below the longest job's {longest} "
                f"iterations: lower --grace-period or --rungs"
            )
        es["rungs"] = [int(m) for m in rungs]
    return texts, points
