"""The live views: a job's progress bar with its samples as they arrive, and a sweep's table,
redrawn until everything has ended. On a terminal they redraw in place; otherwise (a pipe, a log
file) they print whole lines, never cut to 80 columns."""

from __future__ import annotations

from worker.store import JobStore

from . import jobs, render


def sweep(store: JobStore, sw: dict, quiet: bool = False, stderr: bool = True) -> list[dict]:
    """The sweep's table, updated live until every job has ended (printed once at the end when
    the output is not a terminal); returns the final rows."""
    from rich.live import Live

    console = render.console(stderr=stderr, quiet=quiet)
    if not console.is_terminal:
        rows = jobs.wait_all(store, sw["job_ids"], lambda rows: None)
        console.print(render.sweep_table(sw, rows))
        return rows
    with Live(console=console, refresh_per_second=2) as live:
        return jobs.wait_all(
            store,
            sw["job_ids"],
            lambda rows: live.update(render.sweep_table(sw, rows), refresh=True),
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
    j = job(store, job_id, quiet=as_json)
    if as_json:
        render.echo_json(jobs.status_view(j))
    else:
        last = store.samples(j["job_id"], last=True)
        render.final(j, last[0] if last else None)
    return j
