"""Options and arguments shared by several commands, declared once. Ids are checked here,
before anything connects: a malformed id is bad input (exit 2) even with Redis down."""

from __future__ import annotations

import click

from charrnn.cli import recipe_options
from charrnn.options import config_options
from worker.spec import DEFAULT_CHECKPOINT_EVERY
from worker.store import validate_job_id

from . import sweeps
from .jobs import BadInput


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")(fn)


def _id(ctx, param, value):
    return validate_job_id(value)


def job_argument(fn):
    return click.argument("job_id", metavar="JOB", callback=_id)(fn)


def id_argument(fn):
    """A sweep id or a job id (both UUIDs; the store tells which)."""
    return click.argument("some_id", metavar="SWEEP|JOB", callback=_id)(fn)


def ids_argument(fn):
    def check(ctx, param, values):
        if not values:
            raise BadInput("give at least one sweep or job id")
        return tuple(validate_job_id(v) for v in values)

    return click.argument("ids", metavar="SWEEP|JOB...", nargs=-1, callback=check)(fn)


def _tags(ctx, param, values):
    sweeps.check_tags(values)
    return values


def job_options(fn):
    """What every submitted job may carry besides its hyperparameters."""
    fn = click.option(
        "--checkpoint-every",
        type=click.IntRange(min=1),
        default=None,
        help=f"Iterations between checkpoints (default {DEFAULT_CHECKPOINT_EVERY}).",
    )(fn)
    fn = click.option(
        "--tag",
        "tags",
        multiple=True,
        callback=_tags,
        help=f"A tag to list the job by (repeatable; '{sweeps.RESERVED_TAG}...' "
        f"is the sweep's own).",
    )(fn)
    return click.option("--name", default=None, help="A name for the job.")(fn)


def submit_options(fn):
    """`orchestrator submit`: a corpus and every hyperparameter of `charrnn train`."""
    fn = recipe_options(job_options(config_options()(fn)))
    return click.option(
        "--corpus", required=True, help="A UTF-8 text file, or builtin:python-docs."
    )(fn)


def sweep_hyper_options(fn):
    """`orchestrator sweep`: every hyperparameter, a comma list making a grid axis; the models'
    seed is --model-seed (--seed seeds the search)."""
    return job_options(config_options(grid=True, flags={"seed": "--model-seed"})(fn))
