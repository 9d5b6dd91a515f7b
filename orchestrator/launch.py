"""From the command line's options to jobs in the queue: one job (`submit`) or a sweep. Every
point is checked (corpus read, Config built) before anything is stored or started."""

from __future__ import annotations

from charrnn import recipes

from . import jobs, sweeps
from .edge import Ctx
from .errors import BadInput


def submit(
    c: Ctx,
    corpus: str,
    hyper: dict,
    checkpoint_every: int | None,
    name: str | None,
    tags: tuple[str, ...],
    recipe: str | None = None,
    minutes: float | None = None,
) -> tuple[str, bool]:
    """One job from typed hyperparameters (a recipe's values under the ones given; Config's
    defaults for the rest), for a length or a budget in minutes (which the worker that starts
    it turns into iterations). Returns (job id, whether the corpus was uploaded)."""
    if minutes is not None and (hyper.get("iterations") or hyper.get("epochs")):
        raise BadInput("give --minutes, --iterations or --epochs, not two of them")
    budget = recipes.minutes_for(recipe, hyper, minutes)
    hyper = recipes.expand(recipe, hyper)
    text, [(cfg, total)] = jobs.validate(corpus, [hyper])
    store = c.store(start=True)
    return jobs.submit(
        store, c.url(), corpus, text, cfg, None if budget else total, checkpoint_every, name,
        tuple(tags), minutes=budget,
    )  # fmt: skip


def sweep_spec(
    spec_file: str | None,
    corpora: tuple[str, ...],
    hyper: dict,
    search: dict,
    name: str | None,
    tags: tuple[str, ...],
    checkpoint_every: int | None,
) -> dict:
    """The normalized spec of the sweep file and options together (options win); search holds
    the search options (grid, samples, uniform, ..., search_seed)."""
    search = dict(search)
    search["seed"] = search.pop("search_seed", None)
    base = sweeps.read_file(spec_file, corpus_given=bool(corpora)) if spec_file else None
    spec = sweeps.from_options(corpora, hyper, base=base, **search)
    for key, value in (
        ("name", name),
        ("tags", list(tags) or None),
        ("checkpoint_every", checkpoint_every),
    ):
        if value is not None:
            spec[key] = value
    return sweeps.normalize(spec)


def sweep(c: Ctx, spec: dict) -> tuple[str, list[str]]:
    """Plan every point (corpora read, configs checked), then store and enqueue the sweep.
    Returns (sweep id, job ids)."""
    texts, points = sweeps.plan(spec)
    store = c.store(start=True)
    return jobs.submit_sweep(store, c.url(), spec, texts, points)


def with_recipe(spec: dict, recipe: str | None) -> dict:
    """The sweep's fixed values over a recipe's: every value the sweep fixes, varies or draws
    wins; the recipe fills the rest (its budget does not apply: a sweep's points give their
    length)."""
    if recipe is None:
        return spec
    taken = set(spec["fixed"]) | set(spec.get("grid") or {})
    taken |= set((spec.get("random") or {}).get("space") or {})
    values = {k: v for k, v in recipes.recipe(recipe).values.items() if k not in taken}
    return {**spec, "fixed": {**values, **spec["fixed"]}, "recipe": recipe}
