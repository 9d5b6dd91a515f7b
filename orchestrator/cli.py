"""`orchestrator`: submit charrnn training jobs and sweeps, watch them, compare them, fetch their
results by id.

Exit codes: 0 success; 1 a job failed or was cancelled (submit --wait, sweep --wait, watch); 2
usage or bad input (corpus, hyperparameter, search space, id syntax, prime, checkpoint file); 3
unknown job or sweep id; 4 Redis unreachable or refused the password; 5 the job has no checkpoint
or sample yet.
"""
from __future__ import annotations

import functools
import json
import sys
import time

import click
import redis

from charrnn import checkpoint as ckpt
from charrnn.cli import run, sample_options, sample_text
from charrnn.config import FIELDS
from charrnn.errors import CharRNNError

from worker import settings
from worker.errors import (CorpusTooLarge, InvalidJobId, JobTooLarge, NoCheckpoint, NoSuchJob,
                           Unreachable)
from worker.spec import DEFAULT_CHECKPOINT_EVERY
from worker.store import JobStore, Status, connect, redact, validate_job_id

from . import embedded, jobs, leaderboard, sweeps

EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNKNOWN_JOB, EXIT_UNREACHABLE, EXIT_NOT_YET = 1, 2, 3, 4, 5


class Fail(click.ClickException):
    """A domain error: one line on stderr (printed by charrnn.cli.run) and its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code


class Ctx:
    """The one context object: the Redis URL (option, environment, or the embedded stack) and a
    connection opened on first use."""

    def __init__(self, url: str | None):
        self.given_url = url
        self._url: str | None = None
        self._store: JobStore | None = None

    def url(self, start_workers: bool = False) -> str:
        if self._url is None:
            if self.given_url:
                self._url = self.given_url
            else:
                try:
                    st = (embedded.start_workers(embedded.default_workers()) if start_workers
                          else embedded.start_redis())
                except embedded.EmbeddedError as e:
                    raise Fail(str(e), EXIT_UNREACHABLE) from None
                self._url = st["url"]
        return self._url

    def store(self, start_workers: bool = False) -> JobStore:
        if self._store is None:
            url = self.url(start_workers)
            s = JobStore(connect(url))
            try:
                s.r.ping()
            except redis.RedisError as e:
                raise _unreachable(url, e) from None
            self._store = s
        return self._store


def _unreachable(url: str, e: Exception) -> Fail:
    if isinstance(e, redis.AuthenticationError) or "WRONGPASS" in str(e) or "NOAUTH" in str(e) \
            or "invalid password" in str(e).lower() or "invalid username-password" in str(e).lower():
        return Fail(f"Redis at {redact(url)} refused the password", EXIT_UNREACHABLE)
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return Fail(f"Redis unreachable at {redact(url)}: {reason}", EXIT_UNREACHABLE)


def errors(fn):
    """Domain errors to one line on stderr and a documented exit code, at the edge."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (NoSuchJob,) as e:
            raise Fail(str(e), EXIT_UNKNOWN_JOB) from None
        except (InvalidJobId, CorpusTooLarge, JobTooLarge, CharRNNError, jobs.BadInput) as e:
            raise Fail(str(e), EXIT_USAGE) from None
        except NoCheckpoint as e:
            raise Fail(str(e), EXIT_NOT_YET) from None
        except (Unreachable, embedded.EmbeddedError) as e:
            raise Fail(str(e), EXIT_UNREACHABLE) from None
        except redis.RedisError as e:
            ctx = click.get_current_context().find_object(Ctx)
            raise _unreachable(ctx._url or "redis://?", e) from None
    return wrapper


pass_ctx = click.make_pass_decorator(Ctx)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON only, on stdout.")(fn)


def _job_id(ctx, param, value):
    """Checked before anything connects: a malformed id is bad input (2) even with Redis down."""
    try:
        return validate_job_id(value)
    except InvalidJobId as e:
        raise Fail(str(e), EXIT_USAGE) from None


def job_argument(fn):
    return click.argument("job_id", metavar="JOB", callback=_job_id)(fn)


def id_argument(fn):
    """A sweep id or a job id (both UUIDs; the store tells which)."""
    return click.argument("some_id", metavar="SWEEP|JOB", callback=_job_id)(fn)


def ids_argument(fn):
    def check(ctx, param, values):
        if not values:
            raise Fail("give at least one sweep or job id", EXIT_USAGE)
        return tuple(_job_id(ctx, param, v) for v in values)
    return click.argument("ids", metavar="SWEEP|JOB...", nargs=-1, callback=check)(fn)


def fixed_hyper_options(fn, flags: dict[str, str] | None = None):
    """Every hyperparameter of `charrnn train`, same names; values parsed with their types."""
    aliases = {"learning_rate": ("--lr",)}      # as in `charrnn train`
    for name in reversed(FIELDS):
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        fn = click.option(flag, *aliases.get(name, ()), name, default=None,
                          metavar="VALUE", help=f"charrnn hyperparameter {name} (default: charrnn's)")(fn)
    fn = click.option("--checkpoint-every", type=click.IntRange(min=1), default=None,
                      help=f"Iterations between checkpoints (default "
                           f"{DEFAULT_CHECKPOINT_EVERY}).")(fn)
    fn = click.option("--tag", "tags", multiple=True, help="A tag to list the job by (repeatable).")(fn)
    fn = click.option("--name", default=None, help="A name for the job.")(fn)
    return fn


def hyper_options(fn):
    fn = fixed_hyper_options(fn)
    return click.option("--corpus", required=True,
                        help="A UTF-8 text file, or builtin:python-docs.")(fn)


def _fmt(v, digits=4):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _when(t):
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=None, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--redis-url", envvar=settings.REDIS_URL_ENV, default=None, metavar="URL",
              help="redis://[:password@]host:port/db (env CHARRNN_REDIS_URL). Without it, an "
                   "embedded Redis and local workers under CHARRNN_HOME are used.")
@click.pass_context
def cli(ctx, redis_url):
    """Submit charrnn training jobs to Celery workers; fetch results by job id."""
    ctx.obj = Ctx(redis_url)


def _submit_many(c: Ctx, corpus, hyper_sets, checkpoint_every, name, tags):
    text, configs = jobs.validate(corpus, hyper_sets)
    store = c.store(start_workers=c.given_url is None)
    out = []
    for cfg, total in configs:
        job_id, uploaded = jobs.submit(store, c.url(), corpus, text, cfg, total, checkpoint_every,
                                       name, tuple(tags))
        out.append((job_id, uploaded))
    return out


@cli.command()
@hyper_options
@click.option("--wait", is_flag=True, help="Show progress until the job ends; exit 1 if it failed.")
@json_option
@pass_ctx
@errors
def submit(c: Ctx, corpus, name, tags, checkpoint_every, wait, as_json, **hyper):
    """Validate, upload the corpus (once), enqueue a training job; print its id."""
    for k, v in hyper.items():
        if v is not None and "," in v:
            raise jobs.BadInput(f"bad hyperparameter --{k.replace('_', '-')}: {v!r} "
                                f"(comma lists are for `orchestrator sweep`)")
    [(job_id, uploaded)] = _submit_many(c, corpus, jobs.hyper_grid(hyper, False),
                                        checkpoint_every, name, tags)
    if not wait:
        if as_json:
            _echo_json({"job_id": job_id, "corpus_uploaded": uploaded})
        else:
            click.echo(job_id)
        return
    if not as_json:
        click.echo(f"job {job_id}", err=True)
    _follow_to_end(c.store(), job_id, as_json)


def _follow_to_end(store: JobStore, job_id: str, as_json: bool = False) -> None:
    """Live progress until the job ends, then its outcome; exit 1 if it failed or was cancelled."""
    job = _follow(store, job_id, quiet=as_json)
    if as_json:
        _echo_json(jobs.status_view(job))
    else:
        _print_final(store, job)
    if jobs.stopped_with_error(job):
        sys.exit(EXIT_JOB_FAILED)


@cli.command()
@click.option("-f", "--file", "spec_file", default=None, metavar="PATH",
              help="A sweep file (YAML or JSON): corpus, fixed, grid, random, early_stop. "
                   "Options given as well add to it.")
@click.option("--corpus", "corpora", multiple=True,
              help="A UTF-8 text file, or builtin:python-docs (repeatable: every point on each).")
@click.option("--grid", multiple=True, metavar="NAME=V1,V2,...",
              help="A grid axis, e.g. --grid hidden_size=64,128,256 (repeatable).")
@click.option("--random", "samples", type=click.IntRange(min=1), default=None, metavar="N",
              help="Draw N points from the --uniform/--log-uniform/--choice space (each crossed "
                   "with the grid).")
@click.option("--uniform", multiple=True, metavar="NAME=LOW,HIGH", help="Uniform on [LOW, HIGH].")
@click.option("--log-uniform", multiple=True, metavar="NAME=LOW,HIGH",
              help="Log-uniform on [LOW, HIGH], e.g. learning_rate=0.001,0.1.")
@click.option("--choice", multiple=True, metavar="NAME=A,B,...", help="One of the values.")
@click.option("--seed", "search_seed", type=click.IntRange(min=0), default=None,
              help="Seed of the random search (default: drawn, printed and recorded). The "
                   "models' own seed is --model-seed.")
@click.option("--early-stop", type=click.Choice(sweeps.SCHEDULERS), default=None,
              help="asha: asynchronous successive halving across the pool.")
@click.option("--rungs", default=None, metavar="ITER,ITER,...",
              help="ASHA rungs at these iterations (default: from --grace-period).")
@click.option("--grace-period", type=click.IntRange(min=1), default=None, metavar="ITER",
              help="ASHA's first rung; the next ones are ETA times further (default: three "
                   "rungs below the longest job).")
@click.option("--reduction-factor", type=click.FloatRange(min=1, min_open=True), default=None,
              metavar="ETA", help="ASHA keeps the top 1/ETA at each rung (default 3).")
@functools.partial(fixed_hyper_options, flags={"seed": "--model-seed"})
@click.option("--wait", is_flag=True, help="Show the sweep's table until every job has ended; "
                                           "exit 1 if any failed or was cancelled.")
@json_option
@pass_ctx
@errors
def sweep(c: Ctx, spec_file, corpora, grid, samples, uniform, log_uniform, choice, search_seed,
          early_stop, rungs, grace_period, reduction_factor, name, tags, checkpoint_every,
          wait, as_json, **hyper):
    """Run a search space: a grid and/or random draws, on one or more corpora, with optional
    early stopping (ASHA). Prints the sweep id, then one job id per point.

    \b
      orchestrator sweep --corpus a.txt --grid hidden_size=64,128,256 \\
          --grid learning_rate=0.1,0.03 --iterations 20000
      orchestrator sweep --corpus a.txt --random 16 --seed 1 \\
          --log-uniform learning_rate=0.001,0.1 --choice num_layers=1,2,3 \\
          --early-stop asha --grace-period 2000
      orchestrator sweep -f sweep.yaml --wait
    """
    base = sweeps.read_file(spec_file) if spec_file else None
    spec = sweeps.from_options(corpora, hyper, grid, samples, uniform, log_uniform, choice,
                               search_seed, early_stop, rungs, grace_period, reduction_factor, base)
    if name is not None:
        spec["name"] = name
    if tags:
        spec["tags"] = list(tags)
    if checkpoint_every is not None:
        spec["checkpoint_every"] = checkpoint_every
    spec = sweeps.normalize(spec)
    texts, points = sweeps.plan(spec)          # every point checked before anything is stored
    store = c.store(start_workers=c.given_url is None)
    sweep_id, ids = jobs.submit_sweep(store, c.url(), spec, texts, points)
    if not as_json:
        click.echo(sweep_id)
        for j in ids:
            click.echo(j)
        click.echo(_sweep_summary(spec, len(ids)), err=True)
    if not wait:
        if as_json:
            _echo_json({"sweep_id": sweep_id, "job_ids": ids})
        return
    rows = _follow_sweep(store, store.get_sweep(sweep_id), quiet=as_json)
    if as_json:
        _echo_json({"sweep_id": sweep_id, "job_ids": ids,
                    "jobs": [jobs.status_view(j) for j in rows]})
    if any(jobs.stopped_with_error(j) for j in rows):
        sys.exit(EXIT_JOB_FAILED)


def _sweep_summary(spec: dict, n: int) -> str:
    parts = [f"{n} job(s)"]
    if spec.get("random"):
        parts.append(f"random search seed {spec['random']['seed']}")
    es = spec.get("early_stop")
    if es:
        parts.append(f"ASHA rungs {', '.join(map(str, es['rungs']))}, "
                     f"reduction factor {es['reduction_factor']:g}")
    return "sweep: " + "; ".join(parts)


def _sweep_table(sweep: dict, rows: list[dict]):
    """The sweep as Ray Tune's status table: one row per job, what varies, progress, losses."""
    from rich import box
    from rich.table import Column, Table
    names = leaderboard.varying(rows)
    counts = leaderboard.counts(rows)
    title = (f"sweep {sweep['sweep_id']}" + (f" ({sweep['name']})" if sweep["name"] else "")
             + ": " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items())))
    t = Table(Column("job", no_wrap=True, min_width=36), "status",
              *[Column(leaderboard.short(n), justify="right") for n in names],
              Column("iteration", justify="right"), Column("loss", justify="right"),
              Column("val", justify="right"), Column("best val", justify="right"),
              title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              collapse_padding=True)
    for j in rows:
        t.add_row(j["job_id"], j["status"],
                  *[leaderboard.fmt_value(v) for v in leaderboard.params(j, names).values()],
                  f"{j['iteration'] or 0}/{j['iterations'] or '?'}",
                  _fmt(leaderboard.per_char(j, j["smooth_loss"]), 3), _fmt(j["val_loss"], 3),
                  _fmt(j["best_val_loss"], 3))
    return t


def _console(stderr: bool = False, quiet: bool = False):
    from rich.console import Console
    out = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, quiet=quiet, width=None if out.isatty() else 160)


def _follow_sweep(store: JobStore, sweep: dict, quiet: bool = False, stderr: bool = True) -> list[dict]:
    """The sweep's table, updated live until every job has ended (printed once at the end when
    the output is not a terminal); returns the final rows."""
    from rich.live import Live
    console = _console(stderr=stderr, quiet=quiet)
    if not console.is_terminal:
        rows = jobs.wait_all(store, sweep["job_ids"], lambda rows: None)
        console.print(_sweep_table(sweep, rows))
        return rows
    with Live(console=console, refresh_per_second=2) as live:
        return jobs.wait_all(store, sweep["job_ids"],
                             lambda rows: live.update(_sweep_table(sweep, rows), refresh=True))


def _follow(store: JobStore, job_id: str, quiet: bool = False) -> dict:
    """A live progress bar (iteration/total, loss, chars/s, ETA) and samples as they appear."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True, quiet=quiet)
    with Progress(TextColumn("{task.fields[status]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}/char  val {task.fields[val]}  "
                             "{task.fields[cps]} chars/s"),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("train", total=None, status="queued", loss="-", val="-", cps="-")

        def update(job, new_samples):
            for s in new_samples:
                bar.console.print(f"[dim]--- sample at iteration {s['iteration']} ---[/dim]")
                bar.console.print(s["text"], markup=False, highlight=False)
            bar.update(task, total=job["iterations"], completed=job["iteration"] or 0,
                       status=job["status"], loss=_fmt(leaderboard.per_char(job, job["smooth_loss"]), 3),
                       val=_fmt(job["val_loss"], 3), cps=_fmt(job["chars_per_second"], 0))

        return jobs.wait(store, job_id, update)


def _print_final(store: JobStore, job: dict) -> None:
    click.echo(f"status: {job['status']}")
    if job["error"]:
        click.echo(f"error: {job['error']}")
    click.echo(f"iterations: {job['iteration']}/{job['iterations']}")
    click.echo(f"validation loss: {_fmt(job['val_loss'])} nats/char")
    last = store.samples(job["job_id"], last=True)
    if last:
        click.echo(f"sample (iteration {last[0]['iteration']}):")
        click.echo(last[0]["text"])


@cli.command()
@id_argument
@json_option
@pass_ctx
@errors
def status(c: Ctx, some_id, as_json):
    """A job's status and latest metrics, or a sweep's table of jobs."""
    store = c.store()
    if leaderboard.is_sweep(store, some_id):
        sw = store.get_sweep(some_id)
        rows = store.jobs(sw["job_ids"])
        if as_json:
            _echo_json(_sweep_view(sw, rows))
        else:
            _console().print(_sweep_table(sw, rows))
        return
    view = jobs.status_view(store.get(some_id))
    if as_json:
        _echo_json(view)
        return
    for k, v in view.items():
        click.echo(f"{k:17} {_when(v) if k.endswith('_at') else _fmt(v)}")


def _sweep_view(sw: dict, rows: list[dict]) -> dict:
    names = leaderboard.varying(rows)
    counts = leaderboard.counts(rows)
    return {"sweep_id": sw["sweep_id"], "name": sw["name"], "created_at": sw["created_at"],
            "spec": sw["spec"], "counts": counts, "varying": names,
            "jobs": [dict(jobs.status_view(j), best_val_loss=j["best_val_loss"],
                          params=leaderboard.params(j, names)) for j in rows]}


@cli.command("list")
@click.option("--status", "status_", type=click.Choice([s.value for s in Status]), default=None)
@click.option("--tag", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_ctx
@errors
def list_(c: Ctx, status_, tag, limit, as_json):
    """Jobs, newest first."""
    rows = c.store().list(status=status_, tag=tag, limit=limit)
    if as_json:
        _echo_json([dict(jobs.status_view(j), name=j["name"], tags=j["tags"]) for j in rows])
        return
    from rich.console import Console
    from rich import box
    from rich.table import Column, Table
    named = any(j["name"] for j in rows)
    # compact, so that a whole row fits 80 columns; job ids are for copying: never cut
    t = Table(Column("job", no_wrap=True, min_width=36), *(["name"] if named else []), "status",
              Column("iteration", justify="right"), Column("val", justify="right"),
              Column("chars/s", justify="right"), "submitted", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for j in rows:
        t.add_row(j["job_id"], *([j["name"] or ""] if named else []), j["status"],
                  f"{j['iteration'] or 0}/{j['iterations'] or '?'}", _fmt(j["val_loss"], 3),
                  _fmt(j["chars_per_second"], 0),
                  time.strftime("%m-%d %H:%M", time.localtime(j["submitted_at"])))
    Console(width=None if sys.stdout.isatty() else 120).print(t)   # piped: no wrapping at 80


@cli.command()
@job_argument
@json_option
@pass_ctx
@errors
def results(c: Ctx, job_id, as_json):
    """Spec, final metrics, loss history, samples and events of a job."""
    s = c.store()
    job = s.get(job_id)
    out = {**jobs.status_view(job), "name": job["name"], "tags": job["tags"],
           "sweep_id": job["sweep_id"], "spec": job["spec"].to_dict(),
           "best_val_loss": job["best_val_loss"], "restarts": job["restarts"],
           "rollbacks": job["rollbacks"], "learning_rate": job["learning_rate"],
           "history": s.history(job["job_id"]), "samples": s.samples(job["job_id"]),
           "events": s.events(job["job_id"])}
    if as_json:
        _echo_json(out)
        return
    for k in jobs.STATUS_FIELDS + ("best_val_loss", "restarts", "rollbacks", "sweep_id"):
        click.echo(f"{k:17} {_when(out[k]) if k.endswith('_at') else _fmt(out[k])}")
    click.echo(f"spec              {json.dumps(out['spec']['hyper'], sort_keys=True)}")
    click.echo(f"loss history      {len(out['history'])} points")
    for it, loss, val in out["history"][-5:]:
        click.echo(f"  {it:>9}  loss {_fmt(loss)}  val {_fmt(val)}")
    for e in out["events"]:
        extra = {k: v for k, v in e.items() if k not in ("t", "event")}
        click.echo(f"event {_when(e['t'])} {e['event']} {json.dumps(extra) if extra else ''}")
    if out["samples"]:
        click.echo(f"last sample (iteration {out['samples'][-1]['iteration']}):")
        click.echo(out["samples"][-1]["text"])


@cli.command()
@job_argument
@click.option("--last", is_flag=True, help="Only the latest sample.")
@json_option
@pass_ctx
@errors
def samples(c: Ctx, job_id, last, as_json):
    """Samples a job drew during training."""
    s = c.store()
    job = s.get(job_id)
    rows = s.samples(job["job_id"], last=last)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        raise NoCheckpoint(f"job {job['job_id']} has no samples yet")
    for r in rows:
        click.echo(f"--- iteration {r['iteration']} ---")
        click.echo(r["text"])


def _load_checkpoint(c: Ctx, job_id: str, best: bool):
    s = c.store()
    raw, meta = s.checkpoint(s.get(job_id)["job_id"], "best" if best else "latest")
    return raw, ckpt.load(raw, name=f"the job's {'best' if best else 'latest'} checkpoint")


@cli.command()
@job_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .npz (a file `charrnn sample --checkpoint` reads).")
@click.option("--best", is_flag=True, help="The best checkpoint by validation loss.")
@pass_ctx
@errors
def checkpoint(c: Ctx, job_id, output, best):
    """Download a job's latest (or best) checkpoint, verified."""
    raw, ck = _load_checkpoint(c, job_id, best)
    ckpt.write_bytes(raw, output)
    click.echo(f"wrote {output} (iteration {ck.iteration})", err=True)


@cli.command()
@job_argument
@sample_options
@click.option("--best", is_flag=True, help="From the best checkpoint instead of the latest.")
@pass_ctx
@errors
def sample(c: Ctx, job_id, length, temperature, top_k, prime, seed, argmax, best):
    """New text from a job's checkpoint: exactly what `charrnn sample` prints for it."""
    raw, _ = _load_checkpoint(c, job_id, best)   # verified; errors map to exit codes here
    click.echo(sample_text(raw, length, temperature, top_k, prime, seed, argmax,
                           name="the job's checkpoint"))


@cli.command()
@id_argument
@pass_ctx
@errors
def watch(c: Ctx, some_id):
    """Live progress of a job, or a sweep's live table, until it ends; exit 1 if a job failed or
    was cancelled."""
    store = c.store()
    if leaderboard.is_sweep(store, some_id):
        rows = _follow_sweep(store, store.get_sweep(some_id), stderr=False)
        if any(jobs.stopped_with_error(j) for j in rows):
            sys.exit(EXIT_JOB_FAILED)
        return
    _follow_to_end(store, store.get(some_id)["job_id"])


@cli.command()
@id_argument
@json_option
@pass_ctx
@errors
def cancel(c: Ctx, some_id, as_json):
    """A queued job never starts; a running one stops at its next check, keeping a checkpoint.
    For a sweep: every job of it that has not ended."""
    store, job_id = c.store(), some_id
    if leaderboard.is_sweep(store, some_id):
        sw = store.get_sweep(some_id)
        out: dict[str, list[str]] = {"cancelled": [], "cancel_requested": [], "already_ended": []}
        for j in store.jobs(sw["job_ids"]):
            if jobs.is_terminal(j):
                out["already_ended"].append(j["job_id"])
                continue
            st = store.cancel(j["job_id"])
            out["cancel_requested" if st == "running" else
                "cancelled" if st == "cancelled" else "already_ended"].append(j["job_id"])
        if as_json:
            _echo_json({"sweep_id": sw["sweep_id"], **out})
        else:
            click.echo(f"sweep {sw['sweep_id']}: {len(out['cancelled'])} cancelled, "
                       f"{len(out['cancel_requested'])} running asked to stop, "
                       f"{len(out['already_ended'])} already ended")
        return
    st = store.cancel(job_id)
    msg = {"cancelled": "cancelled", "running": "cancel requested; it stops at its next check"}
    if as_json:
        _echo_json({"job_id": job_id, "status": st})
    else:
        click.echo(msg.get(st, f"already {st}; nothing to cancel"))


@cli.command()
@ids_argument
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (one row per job).")
@json_option
@pass_ctx
@errors
def compare(c: Ctx, ids, as_csv, as_json):
    """A leaderboard of sweeps' and jobs' runs, best validation loss first, with what varies."""
    if as_csv and as_json:
        raise Fail("give --json or --csv, not both", EXIT_USAGE)
    store = c.store()
    found, _ = leaderboard.collect(store, ids)
    names, rows = leaderboard.board(store, found)
    if as_json:
        _echo_json({"varying": names, "jobs": rows})
        return
    if as_csv:
        import csv
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["rank", "job_id", "status", "best_val_loss", "val_loss", *names, "iteration",
                    "iterations", "chars_per_second", "sample"])
        for r in rows:
            w.writerow([r["rank"], r["job_id"], r["status"], _csv(r["best_val_loss"]),
                        _csv(r["val_loss"]), *[_csv(v) for v in r["params"].values()],
                        r["iteration"], _csv(r["iterations"]), _csv(r["chars_per_second"]),
                        r["sample"] or ""])
        return
    from rich import box
    from rich.table import Column, Table
    t = Table(Column("#", justify="right"), Column("job", no_wrap=True, min_width=36), "status",
              Column("best val", justify="right"),
              *[Column(leaderboard.short(n), justify="right") for n in names],
              Column("iteration", justify="right"), Column("chars/s", justify="right"),
              Column("last sample", no_wrap=True, max_width=40, overflow="ellipsis"),
              box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for r in rows:
        t.add_row(str(r["rank"]), r["job_id"], r["status"], _fmt(r["best_val_loss"], 4),
                  *[leaderboard.fmt_value(v) for v in r["params"].values()],
                  f"{r['iteration']}/{r['iterations'] or '?'}", _fmt(r["chars_per_second"], 0),
                  r["sample"] or "", )
    _console().print(t)


def _csv(v):
    return "" if v is None else repr(v) if isinstance(v, float) else v


@cli.command()
@ids_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The PNG to write.")
@click.option("--title", default=None, help="A title (default: the sweep or the job ids).")
@pass_ctx
@errors
def plot(c: Ctx, ids, output, title):
    """Loss curves: smoothed training loss and validation loss against characters seen, one
    line per job, labelled by what varies. Needs matplotlib (pip install 'charrnn[plot]')."""
    from . import plots
    plots._pyplot()                 # a missing extra is reported before any connection
    store = c.store()
    found, sws = leaderboard.collect(store, ids)
    names = leaderboard.varying(found)
    hist = leaderboard.histories(store, found)
    lines = [(leaderboard.label(j, names), leaderboard.curves(j, hist[j["job_id"]]))
             for j in leaderboard.rank(found)]
    if title is None:
        title = ", ".join(f"sweep {s['name'] or s['sweep_id'][:8]}" for s in sws) or \
            ", ".join(j["job_id"][:8] for j in found)
    plots.write_png(lines, title, output)
    click.echo(f"wrote {output} ({len(lines)} job(s))", err=True)


@cli.command("sweeps")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@pass_ctx
@errors
def sweeps_(c: Ctx, limit, as_json):
    """Sweeps, newest first, with how many of their jobs are in each status."""
    store = c.store()
    out = []
    for sw in store.list_sweeps(limit):
        counts = leaderboard.counts(store.jobs(sw["job_ids"]))
        out.append({"sweep_id": sw["sweep_id"], "name": sw["name"], "created_at": sw["created_at"],
                    "jobs": sw["n_jobs"], "counts": counts})
    if as_json:
        _echo_json(out)
        return
    if not out:
        click.echo("no sweeps")
    for s in out:
        counts = ", ".join(f"{n} {st}" for st, n in sorted(s["counts"].items()))
        click.echo(f"{s['sweep_id']}  {_when(s['created_at'])}  {s['name'] or '-'}  "
                   f"{s['jobs']} job(s): {counts}")


@cli.command()
@click.option("--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for workers to answer.")
@json_option
@pass_ctx
@errors
def workers(c: Ctx, timeout, as_json):
    """Live workers and the job each runs."""
    from worker.app import client_app
    c.store()   # fail fast, with the usual message, if Redis is unreachable
    insp = client_app(c.url()).control.inspect(timeout=timeout)
    active = insp.active() or {}
    rows = {name: [t["args"][0] if t.get("args") else t.get("id") for t in tasks]
            for name, tasks in sorted(active.items())}
    if as_json:
        _echo_json({"workers": [{"name": n, "jobs": j} for n, j in rows.items()]})
        return
    if not rows:
        click.echo("no live workers")
    for n, j in rows.items():
        click.echo(f"{n}  {', '.join(j) if j else 'idle'}")


@cli.command()
@id_argument
@pass_ctx
@errors
def delete(c: Ctx, some_id):
    """Remove a job and everything it produced; for a sweep, the sweep and all its jobs."""
    store = c.store()
    if leaderboard.is_sweep(store, some_id):
        gone = store.delete_sweep(some_id)
        click.echo(f"deleted sweep {some_id} and {len(gone)} job(s)", err=True)
        return
    store.delete(some_id)
    click.echo(f"deleted {some_id}", err=True)


@cli.command()
@click.option("--older-than", required=True, help="Age such as 30m, 12h, 7d.")
@json_option
@pass_ctx
@errors
def prune(c: Ctx, older_than, as_json):
    """Delete finished jobs older than an age."""
    gone = c.store().prune(jobs.parse_age(older_than))
    _echo_json({"deleted": gone}) if as_json else click.echo(f"deleted {len(gone)} job(s)")


@cli.command()
@click.option("--workers", "n", type=click.IntRange(min=0), default=None,
              help="Local worker processes (default: one per core).")
@pass_ctx
@errors
def up(c: Ctx, n):
    """Start the embedded Redis and local workers under CHARRNN_HOME."""
    try:
        st = embedded.start_workers(embedded.default_workers() if n is None else n)
    except embedded.EmbeddedError as e:
        raise Fail(str(e), EXIT_UNREACHABLE) from None
    click.echo(f"embedded stack up: redis {redact(st['url'])}, {len(st['workers'])} worker(s), "
               f"data in {st['home']}")


@cli.command()
@pass_ctx
@errors
def down(c: Ctx):
    """Stop the embedded stack (running jobs checkpoint and wait in the queue); data is kept."""
    out = embedded.down()
    click.echo("embedded stack stopped" if out["stopped"] else "embedded stack was not running")
    if out.get("stale"):
        click.echo(f"left alone stale process id(s) {out['stale']}: no longer the stack's", err=True)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --password.")
@click.option("--port", type=click.IntRange(0, 65535), default=8265, show_default=True)
@click.option("--password", envvar="CHARRNN_DASHBOARD_PASSWORD", default=None,
              help="Ask for this password (HTTP basic auth, any user name); env "
                   "CHARRNN_DASHBOARD_PASSWORD.")
@click.option("--open", "open_browser", is_flag=True, help="Open it in a browser.")
@pass_ctx
@errors
def dashboard(c: Ctx, host, port, password, open_browser):
    """A read-only web dashboard: jobs, sweeps, loss curves, samples, workers, live. Needs
    Flask and waitress (pip install 'charrnn[dashboard]')."""
    from . import dashboard as web
    web.check_installed()           # a missing extra or an unsafe bind before any connection
    web.check_bind(host, password)
    web.serve(c.url(), host, port, password, open_browser)


def main():
    run(cli, "orchestrator")


if __name__ == "__main__":
    main()
