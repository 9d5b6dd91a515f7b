"""Options and arguments shared by several commands, declared once. Ids are checked here,
before anything connects: a malformed id is bad input (exit 2) even with Redis down; a prefix of
one is resolved here too, once, for every command (shortid)."""

from __future__ import annotations

import click

from charrnn.options import config_options
from worker.spec import DEFAULT_CHECKPOINT_EVERY

from . import shortid, sweeps
from .edge import Ctx
from .errors import BadInput

BOTH = ("job", "sweep")


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")(fn)


def _expand(ctx: click.Context, text: str, kinds: tuple[str, ...]) -> str:
    """A whole id as given (no connection), or the one id a prefix starts (shortid.expand)."""
    some_id = shortid.parse(text)
    if shortid.is_whole(some_id):
        return some_id
    c = ctx.find_object(Ctx)
    assert c is not None  # the root group made it
    return shortid.expand(c.store().r, some_id, kinds)


def job_argument(fn):
    """A job id, or a unique prefix of one (at least shortid.MIN_PREFIX characters)."""
    return click.argument(
        "job_id", metavar="JOB", callback=lambda ctx, p, v: _expand(ctx, v, ("job",))
    )(fn)


def id_argument(fn):
    """A sweep id or a job id (both UUIDs; the store tells which), or a unique prefix of one."""
    return click.argument(
        "some_id", metavar="SWEEP|JOB", callback=lambda ctx, p, v: _expand(ctx, v, BOTH)
    )(fn)


def ids_argument(fn):
    def check(ctx, param, values):
        if not values:
            raise BadInput("give at least one sweep or job id")
        return tuple(_expand(ctx, v, BOTH) for v in values)

    return click.argument("ids", metavar="SWEEP|JOB...", nargs=-1, callback=check)(fn)


def long_option(fn):
    return click.option(
        "--long", "long_ids", is_flag=True, help="Whole ids in the table (default: 8 characters)."
    )(fn)


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
    fn = job_options(config_options()(fn))
    return click.option(
        "--corpus", required=True, help="A UTF-8 text file, or builtin:python-docs."
    )(fn)


def sweep_hyper_options(fn):
    """`orchestrator sweep`: every hyperparameter, a comma list making a grid axis; the models'
    seed is --model-seed (--seed seeds the search)."""
    return job_options(config_options(grid=True, flags={"seed": "--model-seed"})(fn))
