"""Human output: key/value lines, tables, CSV. Every piece of user text (names, tags, samples,
errors) goes out as plain text, with control characters removed, so a name such as '[/oops]' or
an escape sequence in a sample never reaches the terminal as markup or as a command to it.

Losses are per character everywhere (the trainer reports them so); JSON keeps the
stored fields.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time

import click

# C0 controls but tab and newline, DEL, C1 controls (ESC, CSI and the rest)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
WIDE = 1000
"""Console width when output is not a terminal: whole lines, never cut to 80 columns."""


def plain(text, multiline: bool = False) -> str:
    """User text safe to print: control characters removed; on one line unless multiline."""
    if text is None:
        return ""
    text = _CONTROL.sub("", str(text))
    return text if multiline else text.replace("\n", " ").replace("\t", " ")


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return plain(v)


def status(job: dict) -> str:
    """A job's status for tables and the progress bar: a running job that waits for space in a
    full store says so (`status JOB` shows the whole line)."""
    if job.get("unreadable"):  # a record of a newer version (worker/job.py): status says why
        return f"{job['status']} (needs a newer version)"
    return f"{job['status']} (waiting: store full)" if job.get("waiting") else job["status"]


def when(t) -> str:
    """A timestamp as the dashboard shows it: UTC, to the second, and saying so (one convention
    for both, whatever the machine's time zone)."""
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, default=str))


def console(stderr: bool = False, quiet: bool = False):
    from rich.console import Console

    out = sys.stderr if stderr else sys.stdout
    return Console(
        stderr=stderr, quiet=quiet, width=None if out.isatty() else WIDE, highlight=False
    )


def key_values(pairs) -> None:
    """`key              value` lines, the one layout of `status` and `results`."""
    for k, v in pairs:
        click.echo(f"{k:17} {when(v) if k.endswith('_at') else fmt(v)}")


def job_fields(job: dict, names) -> list[tuple[str, object]]:
    """(label, value) of a job's fields for people: the training loss per character, labelled
    so, in place of the stored smoothed loss."""
    return [
        ("loss/char", job["smooth_loss"])
        if k == "smooth_loss"
        else ("iterations", total(job))
        if k == "iterations"
        else (k, job.get(k))
        for k in names
        if k != "unreadable" or job.get(k)  # said only of a record this version cannot read
    ]


def total(job: dict) -> object:
    """A job's length: its iterations, or its budget in minutes until a worker settles it."""
    if job.get("iterations"):
        return job["iterations"]
    spec = job.get("spec")
    minutes = getattr(spec, "minutes", None)
    return f"budget {minutes:g} min" if minutes else "?"


def history(job: dict, rows: list, shown: int = 5) -> None:
    """The last `shown` rows of a job's loss history, saying which they are."""
    tail = rows[-shown:]
    which = f", last {len(tail)} of {len(rows)}" if len(tail) < len(rows) else ""
    click.echo(f"loss history      {len(rows)} points{which}")
    for row in tail:
        it, loss, val = row[0], row[1], row[2]
        click.echo(f"  {it:>9}  loss/char {fmt(loss)}  val {fmt(val)}")


def events(evs: list[dict]) -> None:
    for e in evs:
        extra = {k: v for k, v in e.items() if k not in ("t", "event")}
        click.echo(
            f"event {when(e['t'])} {plain(e['event'])} {plain(json.dumps(extra)) if extra else ''}"
        )


def sample(heading: str, text: str) -> None:
    click.echo(heading)
    click.echo(plain(text, multiline=True))


def results(job: dict, out: dict, status_fields: tuple[str, ...]) -> None:
    """`results` for people: out is `views.results_view` of the job (its JSON form)."""
    key_values(
        job_fields(
            {**out, "spec": job["spec"]},
            status_fields + ("best_val_loss", "restarts", "rollbacks", "sweep_id"),
        )
    )
    key_values([("spec", json_line(out["spec"]["hyper"]))])
    history(job, out["history"])
    events(out["events"])
    if out["samples"]:
        sample(
            f"last sample (iteration {out['samples'][-1]['iteration']}):",
            out["samples"][-1]["text"],
        )


def final(job: dict, last_sample: dict | None) -> None:
    """How a followed job ended."""
    click.echo(f"status: {job['status']}")
    if job["error"]:
        click.echo(f"error: {plain(job['error'])}")
    click.echo(f"iterations: {job['iteration']}/{total(job)}")
    click.echo(f"validation loss: {fmt(job['val_loss'])} nats/char")
    if last_sample:
        sample(f"sample (iteration {last_sample['iteration']}):", last_sample["text"])


def compare_csv(names: list[str], rows: list[dict]) -> None:
    """The leaderboard as CSV on stdout, one row per job (floats in full)."""

    def cell(v):
        return "" if v is None else repr(v) if isinstance(v, float) else v

    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(
        [
            "rank",
            "job_id",
            "status",
            "best_val_loss",
            "val_loss",
            *names,
            "iteration",
            "iterations",
            "chars_per_second",
            "sample",
        ]
    )
    for r in rows:
        w.writerow(
            [
                r["rank"],
                r["job_id"],
                r["status"],
                cell(r["best_val_loss"]),
                cell(r["val_loss"]),
                *[cell(v) for v in r["params"].values()],
                r["iteration"],
                cell(r["iterations"]),
                cell(r["chars_per_second"]),
                plain(r["sample"] or ""),
            ]
        )


def sweep_lines(sweeps: list[dict]) -> None:
    if not sweeps:
        click.echo("no sweeps")
    for s in sweeps:
        counts = ", ".join(f"{n} {st}" for st, n in sorted(s["counts"].items()))
        click.echo(
            f"{s['sweep_id']}  {when(s['created_at'])}  {plain(s['name']) or '-'}  "
            f"{s['jobs']} job(s): {counts}"
        )


def sweep_summary(spec: dict, n: int) -> str:
    parts = [f"{n} job(s)"]
    if spec.get("random"):
        parts.append(f"random search seed {spec['random']['seed']}")
    es = spec.get("early_stop")
    if es:
        parts.append(
            f"ASHA rungs {', '.join(map(str, es['rungs']))}, "
            f"reduction factor {es['reduction_factor']:g}"
        )
    return "sweep: " + "; ".join(parts)


def json_line(obj) -> str:
    return plain(json.dumps(obj, sort_keys=True))


def cancelled(out: dict) -> str:
    return (
        f"sweep {out['sweep_id']}: {len(out['cancelled'])} cancelled, "
        f"{len(out['cancel_requested'])} running asked to stop, "
        f"{len(out['already_ended'])} already ended"
    )


def worker_lines(rows: dict[str, list[str]]) -> None:
    if not rows:
        click.echo("no live workers")
    for name, job_ids in rows.items():
        click.echo(f"{plain(name)}  {', '.join(job_ids) if job_ids else 'idle'}")


def stack_down(was_up: bool, out: dict) -> None:
    """What `down` says, given whether a stack was up and what `embedded.down` returned."""
    click.echo(
        "embedded stack stopped"
        if was_up or out.get("workers")
        else "no embedded stack running; nothing to stop"
    )
    if out.get("stale"):
        click.echo(
            f"left alone stale process id(s) {out['stale']}: no longer the stack's", err=True
        )


def pruned(job_ids: list[str], dry_run: bool) -> None:
    if dry_run:
        click.echo(f"would delete {len(job_ids)} job(s) (dry run: nothing deleted)")
        for j in job_ids:
            click.echo(f"  {j}")
    else:
        click.echo(f"deleted {len(job_ids)} job(s)")
