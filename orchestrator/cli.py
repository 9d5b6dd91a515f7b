"""`orchestrator`: submit charrnn training jobs and sweeps, watch them, compare them, fetch their
results by id.

Only the command declarations live here: each parses its options, calls one function, and
prints. The context object is in `edge`, the errors and their exit codes in `errors`, the long
option blocks in `params`, human output in `render`, `tables` and `follow`, the work in the
modules of its nouns (launch, views, control, sweeps, leaderboard, jobs). Exit codes: see
`errors`.
"""

from __future__ import annotations

import sys

import click

from charrnn import checkpoint as ckpt
from charrnn import recipes
from charrnn.cli import run, sample_options, sample_text
from charrnn.options import given
from worker import settings
from worker.store import Status

from . import control, embedded, follow, jobs, launch, leaderboard, render, tables, views
from . import tune as tune_cmd
from .edge import Ctx, Group, redact
from .errors import EXIT_JOB_FAILED, EXIT_OK, BadInput
from .params import (
    dashboard_options,
    id_argument,
    ids_argument,
    job_argument,
    json_option,
    long_option,
    submit_options,
    sweep_options,
    tune_options,
)

pass_ctx = click.make_pass_decorator(Ctx)


def exit_code(rows: list[dict]) -> int:
    """1 when any job failed or was cancelled, else 0."""
    return EXIT_JOB_FAILED if any(jobs.stopped_with_error(j) for j in rows) else EXIT_OK


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn", prog_name="orchestrator")
@click.option(
    "--redis-url",
    envvar=settings.REDIS_URL_ENV,
    default=None,
    metavar="URL",
    help="redis://[:password@]host:port/db (env CHARRNN_REDIS_URL). Without it, the "
    "embedded Redis and local workers under CHARRNN_HOME (`orchestrator up`).",
)
@click.pass_context
def cli(ctx, redis_url):
    """Submit charrnn training jobs to Celery workers; fetch results by job id."""
    ctx.obj = Ctx(redis_url)


@cli.command()
@submit_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 1 if it failed.")
@json_option
@pass_ctx
def submit(c: Ctx, corpus, name, tags, checkpoint_every, wait, as_json, recipe, minutes, **hyper):
    """Validate, upload the corpus (once), enqueue a training job; print its id."""
    job_id, uploaded = launch.submit(
        c, corpus, given(hyper), checkpoint_every, name, tags, recipe, minutes
    )
    if not wait:
        if as_json:
            render.echo_json({"job_id": job_id, "corpus_uploaded": uploaded})
        else:
            click.echo(job_id)
        return EXIT_OK
    if not as_json:
        click.echo(job_id)  # on stdout, as without --wait: `id=$(... | head -1)` works with both
    return exit_code([follow.job_to_end(c.store(), job_id, as_json)])


@cli.command()
@sweep_options
@click.option(
    "--wait",
    is_flag=True,
    help="Show the sweep's table until every job has ended; exit 1 if any failed or was cancelled.",
)
@click.option(
    "--recipe",
    type=click.Choice(list(recipes.RECIPES)),
    default=None,
    help="Every point starts from this recipe's values (what the sweep fixes, varies or draws "
    "wins): " + recipes.help_text(),
)
@long_option
@json_option
@pass_ctx
def sweep(
    c: Ctx,
    spec_file,
    corpora,
    name,
    tags,
    checkpoint_every,
    wait,
    long_ids,
    as_json,
    recipe,
    **options,
):
    """Run a search space: a grid and/or random draws, on one or more corpora, with optional
    early stopping (ASHA). Prints `sweep ID`, then `job ID` for each point.

    \b
      orchestrator sweep --corpus a.txt --grid hidden_size=64,128,256 \\
          --grid learning_rate=0.1,0.03 --iterations 20000
      orchestrator sweep --corpus a.txt --random 16 --seed 1 \\
          --log-uniform learning_rate=0.001,0.1 --choice num_layers=1,2,3 \\
          --early-stop asha --grace-period 2000
      orchestrator sweep -f sweep.yaml --wait
    """
    hyper = given(options)  # what is left in options is the search
    if spec_file and tune_cmd.is_tune_file(spec_file):
        raise BadInput(f"{spec_file} says `search: tpe`: run it with orchestrator tune -f")
    spec = launch.sweep_spec(spec_file, corpora, hyper, options, name, tags, checkpoint_every)
    spec = launch.with_recipe(spec, recipe)
    sweep_id, ids = launch.sweep(c, spec)
    if not as_json:
        click.echo("\n".join([f"sweep {sweep_id}", *(f"job {j}" for j in ids)]))
        click.echo(render.sweep_summary(spec, len(ids)), err=True)
    if not wait:
        if as_json:
            render.echo_json({"sweep_id": sweep_id, "job_ids": ids})
        return EXIT_OK
    rows = follow.sweep(c.store(), c.store().get_sweep(sweep_id), quiet=as_json, long=long_ids)
    if as_json:
        render.echo_json(
            {"sweep_id": sweep_id, "job_ids": ids, "jobs": [jobs.status_view(j) for j in rows]}
        )
    return exit_code(rows)


@cli.command()
@tune_options
@json_option
@pass_ctx
def tune(c: Ctx, spec_file, corpus, minutes, trials, trial_minutes, parallel, seed, sampler,
         recipe_trial, name, tags, wait, as_json):  # fmt: skip
    """Search hyperparameters with Optuna's TPE on the pool, within a time budget: each trial's
    point is proposed from the results so far; weak trials stop early (ASHA). Prints the tune's
    id (a sweep's: status, results, compare, watch take it); the result is the best trial's
    best checkpoint (`checkpoint JOB --best`).

    \b
      orchestrator tune --corpus input.txt --minutes 30 --wait
    """
    file = tune_cmd.read_tune_file(spec_file, corpus_given=bool(corpus)) if spec_file else None

    def plan(slots: int | None) -> tuple[str, dict]:
        return tune_cmd.plan(corpus, minutes, trials, trial_minutes, slots, seed, file, name,
                             tuple(tags), sampler, recipe_trial)  # fmt: skip

    text, spec = plan(parallel)  # bad input refused before Redis starts
    store = c.store(start=True)
    if parallel is None and not (file or {}).get("parallel"):
        slots = tune_cmd.pool_slots(store)  # the pool's size, once it can be read
        if slots and slots != spec["tune"]["parallel"]:
            text, spec = plan(slots)
    tune_id, ids = tune_cmd.create(store, c.url(), text, spec)
    if not as_json:
        click.echo(f"tune {tune_id}")
        click.echo(tune_cmd.summary(spec), err=True)
    if not wait:
        if as_json:
            render.echo_json({"tune_id": tune_id, "sweep_id": tune_id, "job_ids": ids})
        return EXIT_OK
    out = tune_cmd.follow(store, c.url(), tune_id, quiet=as_json)
    if as_json:
        render.echo_json({"sweep_id": tune_id, **out})
    elif out["best"] is None:
        click.echo("no trial ended with a checkpoint", err=True)
    else:
        b = out["best"]
        click.echo(
            f"best {b['job_id']} val {b['best_val_loss']:.4f} {render.json_line(b['params'])}"
        )
    return EXIT_OK if out["best"] is not None else EXIT_JOB_FAILED


@cli.command()
@id_argument
@long_option
@json_option
@pass_ctx
def status(c: Ctx, some_id, long_ids, as_json):
    """A job's status and latest metrics, or a sweep's table of jobs."""
    store = c.store()
    kind, obj = views.resolve(store, some_id)
    if kind == "sweep" and as_json:
        render.echo_json(views.sweep_view(store, obj))
    elif kind == "sweep":
        con = render.console()
        con.print(tables.sweep_table(obj, store.jobs(obj["job_ids"]), con.width, long_ids))
    elif as_json:
        render.echo_json(jobs.status_view(obj))
    else:
        render.key_values(render.job_fields(obj, jobs.STATUS_FIELDS))


@cli.command("list")
@click.option("--status", "status_", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--tag", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@long_option
@json_option
@pass_ctx
def list_(c: Ctx, status_, tag, limit, long_ids, as_json):
    """Jobs, newest first."""
    rows = c.store().list(status=status_, tag=tag, limit=limit)
    if as_json:
        render.echo_json(views.list_view(rows))
    else:
        con = render.console()
        con.print(tables.list_table(rows, con.width, long_ids))


@cli.command()
@job_argument
@json_option
@pass_ctx
def results(c: Ctx, job_id, as_json):
    """Spec, final metrics, loss history, samples and events of a job."""
    store = c.store()
    job = store.get(tune_cmd.as_job(store, job_id, False)[0])  # a tune: its best trial
    out = views.results_view(store, job)
    if as_json:
        render.echo_json(out)
    else:
        render.results(job, out, jobs.STATUS_FIELDS)


@cli.command()
@job_argument
@click.option("--last", is_flag=True, help="Only the latest sample.")
@json_option
@pass_ctx
def samples(c: Ctx, job_id, last, as_json):
    """Samples a job drew during training."""
    job_id, _ = tune_cmd.as_job(c.store(), job_id, False)  # a tune: its best trial
    rows = views.samples(c.store(), job_id, last, required=not as_json)
    if as_json:
        render.echo_json(rows)
        return
    for r in rows:
        render.sample(f"--- iteration {r['iteration']} ---", r["text"])


@cli.command()
@job_argument
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Where to write the .npz (a file `charrnn sample --checkpoint` reads); - for stdout.",
)
@click.option("--best", is_flag=True, help="The best checkpoint by validation loss.")
@pass_ctx
def checkpoint(c: Ctx, job_id, output, best):
    """Download a job's latest (or best) checkpoint, verified; a tune's result (its best
    trial's best checkpoint) for a tune's id."""
    if output == "-" and sys.stdout.isatty():
        raise BadInput("not writing a binary checkpoint to a terminal: redirect stdout (> x.npz)")
    raw, ck = views.checkpoint(c.store(), *tune_cmd.as_job(c.store(), job_id, best))
    if output == "-":
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
    else:
        ckpt.write_bytes(raw, output)
    click.echo(
        f"wrote {'stdout' if output == '-' else output} (iteration {ck.iteration})", err=True
    )


@cli.command()
@job_argument
@sample_options
@click.option("--best", is_flag=True, help="From the best checkpoint instead of the latest.")
@pass_ctx
def sample(c: Ctx, job_id, length, temperature, top_k, prime, seed, argmax, best):
    """New text from a job's checkpoint: exactly what `charrnn sample` prints for it (a tune's
    id: its result, the best trial's best checkpoint)."""
    # loaded under the pool's limit
    _, ck = views.checkpoint(c.store(), *tune_cmd.as_job(c.store(), job_id, best))
    click.echo(sample_text(ck, length, temperature, top_k, prime, seed, argmax))


@cli.command()
@id_argument
@long_option
@pass_ctx
def watch(c: Ctx, some_id, long_ids):
    """Live progress of a job, or a sweep's live table, until it ends; exit 1 if a job failed or
    was cancelled."""
    store = c.store()
    kind, obj = views.resolve(store, some_id)
    if kind == "sweep" and tune_cmd.is_tune(obj):
        out = tune_cmd.follow(store, c.url(), obj["sweep_id"], quiet=False, stderr=False)
        return EXIT_OK if out["best"] is not None else EXIT_JOB_FAILED
    if kind == "sweep":
        return exit_code(follow.sweep(store, obj, stderr=False, long=long_ids))
    return exit_code([follow.job_to_end(store, obj["job_id"])])


@cli.command()
@id_argument
@json_option
@pass_ctx
def cancel(c: Ctx, some_id, as_json):
    """A queued job never starts; a running one stops at its next check, keeping a checkpoint.
    For a sweep: every job of it that has not ended."""
    store = c.store()
    kind, obj = views.resolve(store, some_id)
    if kind == "sweep" and tune_cmd.is_tune(obj):
        tune_cmd.cancel(store, obj["sweep_id"])  # first: no trial is added after
    out, text = control.cancel(store, kind, obj)
    if as_json:
        render.echo_json(out)
    else:
        click.echo(text)


@cli.command()
@ids_argument
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (one row per job).")
@long_option
@json_option
@pass_ctx
def compare(c: Ctx, ids, as_csv, long_ids, as_json):
    """A leaderboard of sweeps' and jobs' runs, best validation loss first, with what varies."""
    if as_csv and as_json:
        raise BadInput("give --json or --csv, not both")
    store = c.store()
    names, rows = leaderboard.board(store, leaderboard.collect(store, ids)[0])
    if as_json:
        render.echo_json({"varying": names, "jobs": rows})
    elif as_csv:
        render.compare_csv(names, rows)
    else:
        con = render.console()
        con.print(tables.compare_table(names, rows, con.width, long_ids))


@cli.command()
@ids_argument
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="The PNG to write."
)
@click.option("--title", default=None, help="A title (default: the sweep or the job ids).")
@pass_ctx
def plot(c: Ctx, ids, output, title):
    """Loss curves: smoothed training loss and validation loss against characters seen, one
    line per job, labelled by what varies. Needs matplotlib (pip install 'charrnn[plot]')."""
    from . import plots

    plots._pyplot()  # a missing extra is reported before any connection
    n = plots.plot_jobs(c.store(), ids, output, title)
    click.echo(f"wrote {output} ({n} job(s))", err=True)


@cli.command("sweeps")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_ctx
def sweeps_(c: Ctx, limit, as_json):
    """Sweeps, newest first, with how many of their jobs are in each status."""
    out = views.sweeps_view(c.store(), limit)
    if as_json:
        render.echo_json(out)
    else:
        render.sweep_lines(out)


@cli.command()
@click.option(
    "--timeout",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds to wait for workers to answer.",
)
@json_option
@pass_ctx
def workers(c: Ctx, timeout, as_json):
    """Live workers and the job each runs."""
    c.store()  # fail fast, with the usual message, if Redis is unreachable
    rows = views.active_workers(c.url(), timeout)
    if as_json:
        render.echo_json({"workers": [{"name": n, "jobs": j} for n, j in rows.items()]})
    else:
        render.worker_lines(rows)


@cli.command()
@id_argument
@pass_ctx
def delete(c: Ctx, some_id):
    """Remove a job and everything it produced; for a sweep, the sweep and all its jobs."""
    store = c.store()
    click.echo(control.delete(store, *views.resolve(store, some_id)), err=True)


@cli.command()
@click.option(
    "--older-than",
    "seconds",
    required=True,
    metavar="AGE",
    callback=lambda ctx, param, value: control.parse_age(value),
    help="Age with a unit: 90s, 30m, 12h, 7d, 2w (s, m, h, d, w).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@json_option
@pass_ctx
def prune(c: Ctx, seconds, dry_run, as_json):
    """Delete finished jobs (and the sweeps they leave empty) older than an age."""
    gone = control.prune(c.store(), seconds, dry_run)
    if as_json:
        render.echo_json({"would_delete" if dry_run else "deleted": gone})
    else:
        render.pruned(gone, dry_run)


@cli.command()
@click.option(
    "--workers",
    "n",
    type=click.IntRange(min=0),
    default=None,
    help="Local worker processes (default: one per core).",
)
def up(n):
    """Start the embedded Redis and local workers under CHARRNN_HOME."""
    st = embedded.start_workers(embedded.default_workers() if n is None else n)
    click.echo(
        f"embedded stack up: redis {redact(st['url'])}, {len(st['workers'])} worker(s), "
        f"data in {st['home']}"
    )


@cli.command()
def down():
    """Stop the embedded stack (running jobs checkpoint and wait in the queue); data is kept."""
    was_up = embedded.running_url() is not None
    render.stack_down(was_up, embedded.down())


@cli.command()
@dashboard_options
@pass_ctx
def dashboard(c: Ctx, host, port, password, allow_hosts, open_browser):
    """A read-only web dashboard: jobs, sweeps, loss curves, samples, workers, live. Needs
    Flask and waitress (pip install 'charrnn[dashboard]')."""
    from . import dashboard as web

    web.check_installed()  # a missing extra or an unsafe bind before any connection
    web.check_bind(host, password)
    # with the embedded stack, a `down` while the dashboard runs leaves it this to say
    hint = None if c.given_url else "if the embedded stack is down, start it with `orchestrator up`"
    web.serve(c.url(), host, port, password, open_browser, allow_hosts, hint)


def main():
    run(cli, "orchestrator")


if __name__ == "__main__":
    main()
