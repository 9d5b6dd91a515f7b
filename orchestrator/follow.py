"""The live views: a job's progress bar with its samples as they arrive, and a sweep's table,
redrawn until everything has ended. On a terminal they redraw in place; otherwise (a pipe, a log
file) they print whole lines, never cut to 80 columns."""

from __future__ import annotations

import click

from worker.store import JobStore

from . import jobs, render, tables
from .errors import EXIT_INTERRUPTED


def still_running(kind: str, some_id: str) -> click.exceptions.Exit:
    """Ctrl-C stops the view, never the work: one line saying so, and how to go on."""
    click.echo(
        f"interrupted: {kind} {some_id} is still running (Ctrl-C stops only this view); "
        f"follow it again with `orchestrator watch {some_id}`, or cancel it with "
        f"`orchestrator cancel {some_id}`",
        err=True,
    )
    return click.exceptions.Exit(EXIT_INTERRUPTED)


def sweep(
    store: JobStore, sw: dict, quiet: bool = False, stderr: bool = True, long: bool = False
) -> list[dict]:
    """The sweep's table, updated live until every job has ended (printed once at the end when
    the output is not a terminal); returns the final rows."""
    try:
        return _sweep(store, sw, quiet, stderr, long)
    except KeyboardInterrupt:
        raise still_running("sweep", sw["sweep_id"]) from None


def _sweep(store: JobStore, sw: dict, quiet: bool, stderr: bool, long: bool) -> list[dict]:
    from rich.live import Live

    console = render.console(stderr=stderr, quiet=quiet)
    if not console.is_terminal:
        rows = jobs.wait_all(store, sw["job_ids"], lambda rows: None)
        console.print(tables.sweep_table(sw, rows, console.width, long))
        return rows
    with Live(console=console, refresh_per_second=2) as live:
        return jobs.wait_all(
            store,
            sw["job_ids"],
            lambda rows: live.update(
                tables.sweep_table(sw, rows, console.width, long), refresh=True
            ),
        )


def job(store: JobStore, job_id: str, quiet: bool = False) -> dict:
    """A live progress bar (iteration/total, loss per char, chars/s, ETA) on stderr and samples
    as they appear, until the job ends; returns the job."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = render.console(stderr=True, quiet=quiet)
    with Progress(
        TextColumn("{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "loss {task.fields[loss]}/char  val {task.fields[val]}  {task.fields[cps]} chars/s"
        ),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("train", total=None, status="queued", loss="-", val="-", cps="-")

        def update(j, new_samples):
            for s in new_samples:
                bar.console.print(f"--- sample at iteration {s['iteration']} ---", style="dim")
                bar.console.print(render.plain(s["text"], multiline=True), markup=False)
            bar.update(
                task,
                total=j["iterations"],
                completed=j["iteration"] or 0,
                status=render.status(j),
                loss=render.fmt(j["smooth_loss"], 3),
                val=render.fmt(j["val_loss"], 3),
                cps=render.fmt(j["chars_per_second"], 0),
            )

        return jobs.wait(store, job_id, update)


def job_to_end(store: JobStore, job_id: str, as_json: bool = False) -> dict:
    """Follow a job, then print how it ended (JSON or lines); returns the job."""
    try:
        j = job(store, job_id, quiet=as_json)
    except KeyboardInterrupt:
        raise still_running("job", job_id) from None
    if as_json:
        render.echo_json(jobs.status_view(j))
    else:
        last = store.samples(j["job_id"], last=True)
        render.final(j, last[0] if last else None)
    return j
