"""Options and arguments shared by several commands, declared once. Ids are checked here,
before anything connects: a malformed id is bad input (exit 2) even with Redis down; a prefix of
one is resolved here too, once, for every command (shortid)."""

from __future__ import annotations

import click

from charrnn.cli import recipe_options
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
    fn = recipe_options(job_options(config_options()(fn)))
    return click.option(
        "--corpus", required=True, help="A UTF-8 text file, or builtin:python-docs."
    )(fn)


def sweep_hyper_options(fn):
    """`orchestrator sweep`: every hyperparameter, a comma list making a grid axis; the models'
    seed is --model-seed (--seed seeds the search)."""
    return job_options(config_options(grid=True, flags={"seed": "--model-seed"})(fn))


SWEEP_OPTIONS = (
    click.option(
        "-f",
        "--file",
        "spec_file",
        default=None,
        metavar="PATH",
        help="A sweep file (YAML or JSON): corpus, fixed, grid, random, early_stop. "
        "Options given as well add to it.",
    ),
    click.option(
        "--corpus",
        "corpora",
        multiple=True,
        help="A UTF-8 text file, or builtin:python-docs (repeatable: every point on each). "
        "Replaces the sweep file's corpus.",
    ),
    click.option(
        "--grid",
        multiple=True,
        metavar="NAME=V1,V2,...",
        help="A grid axis, e.g. --grid hidden_size=64,128,256 (repeatable).",
    ),
    click.option(
        "--random",
        "samples",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Draw N points from the --uniform/--log-uniform/--choice space (each crossed "
        "with the grid).",
    ),
    click.option(
        "--uniform", multiple=True, metavar="NAME=LOW,HIGH", help="Uniform on [LOW, HIGH]."
    ),
    click.option(
        "--log-uniform",
        multiple=True,
        metavar="NAME=LOW,HIGH",
        help="Log-uniform on [LOW, HIGH], e.g. learning_rate=0.001,0.1.",
    ),
    click.option("--choice", multiple=True, metavar="NAME=A,B,...", help="One of the values."),
    click.option(
        "--seed",
        "search_seed",
        type=click.IntRange(min=0),
        default=None,
        help="Seed of the random search (default: drawn, printed and recorded). The "
        "models' own seed is --model-seed.",
    ),
    click.option(
        "--early-stop",
        type=click.Choice(sweeps.SCHEDULERS),
        default=None,
        help="asha: asynchronous successive halving across the pool.",
    ),
    click.option(
        "--rungs",
        default=None,
        metavar="ITER,ITER,...",
        help="ASHA rungs at these iterations (default: from --grace-period).",
    ),
    click.option(
        "--grace-period",
        type=click.IntRange(min=1),
        default=None,
        metavar="ITER",
        help="ASHA's first rung; the next ones are ETA times further (default: three "
        "rungs below the longest job).",
    ),
    click.option(
        "--reduction-factor",
        type=click.FloatRange(min=1, min_open=True),
        default=None,
        metavar="ETA",
        help="ASHA keeps the top 1/ETA at each rung (default 3).",
    ),
)
"""`orchestrator sweep`'s search: a sweep file, corpora, grid axes, random draws from a space,
the search's seed and early stopping (ASHA), in the order --help lists them."""


def sweep_options(fn):
    """`orchestrator sweep`: its search (SWEEP_OPTIONS), then every hyperparameter."""
    fn = sweep_hyper_options(fn)
    for option in reversed(SWEEP_OPTIONS):
        fn = option(fn)
    return fn


DASHBOARD_OPTIONS = (
    click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to listen on; anything but loopback needs --password.",
    ),
    click.option("--port", type=click.IntRange(0, 65535), default=8265, show_default=True),
    click.option(
        "--password",
        envvar="CHARRNN_DASHBOARD_PASSWORD",
        default=None,
        help="Ask for this password (HTTP basic auth, any user name); env CHARRNN_DASHBOARD_PASSWORD.",
    ),
    click.option(
        "--allow-host",
        "allow_hosts",
        multiple=True,
        metavar="NAME",
        help="Answer requests for this Host name too (repeatable; besides loopback's and --host); "
        "env CHARRNN_DASHBOARD_HOSTS, comma-separated.",
    ),
    click.option("--open", "open_browser", is_flag=True, help="Open it in a browser."),
)
"""`orchestrator dashboard`: where it listens, its password, the Host names it answers, --open."""


def dashboard_options(fn):
    for option in reversed(DASHBOARD_OPTIONS):
        fn = option(fn)
    return fn


TUNE_OPTIONS = (
    click.option(
        "-f",
        "--file",
        "spec_file",
        default=None,
        metavar="PATH",
        help="A sweep file with `search: tpe`: corpus, fixed, space, budget "
        "({minutes: M} or {trials: N}), parallel, seed.",
    ),
    click.option("--corpus", default=None, help="A UTF-8 text file, or builtin:python-docs."),
    click.option(
        "--minutes",
        type=click.FloatRange(min=0, min_open=True, max=10**5),
        default=None,
        help="Wall-clock budget: trials start until it is spent.",
    ),
    click.option(
        "--trials",
        type=click.IntRange(min=1, max=10_000),
        default=None,
        help="A trial count instead of minutes.",
    ),
    click.option(
        "--trial-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="A full trial's budget (default: from --minutes and --parallel; 1 with --trials).",
    ),
    click.option(
        "--parallel",
        type=click.IntRange(min=1, max=1000),
        default=None,
        help="Trials in flight at once (default: the file's, else the live workers' slots, "
        "else 2).",
    ),
    click.option(
        "--seed",
        type=click.IntRange(min=0, max=2**32 - 1),
        default=None,
        help="The sampler's seed (default: drawn and recorded).",
    ),
    click.option(
        "--sampler",
        type=click.Choice(["tpe", "random"]),
        default="tpe",
        show_default=True,
        help="random: the baseline (random search, same space, budget and rungs).",
    ),
    click.option(
        "--recipe-trial/--no-recipe-trial",
        default=True,
        show_default=True,
        help="With --minutes and the default space: one slot trains the recipe for the budget "
        "from start to end while the others search.",
    ),
    click.option("--name", default=None, help="A name for the tune."),
    click.option("--tag", "tags", multiple=True, help="A tag for its trials (repeatable)."),
    click.option("--wait", is_flag=True, help="Follow the tune to its end and print its best."),
)


def tune_options(fn):
    """`orchestrator tune`: the budget, the sampler and the tune's labels."""
    for option in reversed(TUNE_OPTIONS):
        fn = option(fn)
    return fn
