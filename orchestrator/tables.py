"""The tables of `list`, `compare` and a sweep's `status`/`watch`, fitted to the console's width.

Each column has a priority. Numbers, statuses and ids are never cut: their column is as wide as
its widest cell. Free text (names, corpora, samples) is cut with an ellipsis down to a few
characters. When even that does not fit, the column of lowest priority is left out, then the
next, as `ps` and Docker do: a narrow terminal shows fewer columns, each one whole.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from . import leaderboard
from .render import fmt, plain, status, total
from .shortid import short

FREE_MIN = 8
"""The narrowest a free-text column is cut to before it is left out instead."""


@dataclass
class Col:
    header: str
    priority: int  # the lowest is left out first
    right: bool = False  # numbers
    free: bool = False  # free text: cut with an ellipsis, never below FREE_MIN
    max_width: int | None = None


def fitted(cols: list[Col], rows: list[list[str]], width: int | None, **kw):
    """A rich Table of the columns of highest priority that fit in width, every cell whole
    (free text cut with an ellipsis); all columns when width is None. Every column's width is
    set here, so rich never has to shrink one (it would cut numbers to `2.…`)."""
    keep = list(range(len(cols)))
    while True:
        sub, cells = [cols[i] for i in keep], [[r[i] for i in keep] for r in rows]
        natural = [_natural(c, [r[k] for r in cells]) for k, c in enumerate(sub)]
        if width is None:
            return _build(sub, cells, natural, **kw)
        widths = [min(n, FREE_MIN) if c.free else n for c, n in zip(sub, natural, strict=True)]
        spare = width - _measure(_build(sub, cells, widths, **kw), width)
        if spare >= 0 or len(keep) == 1:
            # what is left goes to the free-text columns, the most important first
            for k in sorted(range(len(sub)), key=lambda k: -sub[k].priority):
                grow = max(0, min(spare, natural[k] - widths[k]))
                widths[k] += grow
                spare -= grow
            return _build(sub, cells, widths, **kw)
        keep.remove(min(keep, key=lambda i: cols[i].priority))


def _natural(c: Col, cells: list[str]) -> int:
    from rich.cells import cell_len

    n = max([cell_len(c.header)] + [cell_len(x) for x in cells])
    return n if c.max_width is None else min(n, c.max_width)


def _measure(table, width: int) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    probe = Console(width=max(width, 1000), file=io.StringIO())  # measures; prints nothing
    return Measurement.get(probe, probe.options, table).maximum


def _build(cols: list[Col], rows: list[list[str]], widths: list[int], **kw):
    from rich import box
    from rich.table import Column, Table
    from rich.text import Text

    columns = [
        Column(
            c.header,
            justify="right" if c.right else "left",
            no_wrap=True,
            overflow="ellipsis" if c.free else "fold",
            width=w,
        )
        for c, w in zip(cols, widths, strict=True)
    ]
    t = Table(
        *columns, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, **kw
    )
    for r in rows:
        t.add_row(*(Text(cell) for cell in r))
    return t


def duration(job: dict, now: float | None = None) -> str:
    """How long a job has trained (to its end, or to now while it runs): 42s, 3m05s, 2h07m."""
    start = job.get("started_at")
    if not start:
        return "-"
    end = job.get("finished_at") or (now or time.time())
    s = max(0, int(end - start))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _progress(j: dict) -> str:
    return f"{j['iteration'] or 0}/{total(j)}"


def list_table(rows: list[dict], width: int | None = None, long: bool = False):
    named = any(j["name"] for j in rows)
    cols = [
        Col("job", 100),
        *([Col("name", 40, free=True, max_width=30)] if named else []),
        Col("status", 90),
        Col("iteration", 70, right=True),
        Col("val", 80, right=True),
        Col("corpus", 30, free=True, max_width=30),
        Col("took", 50, right=True),
        Col("chars/s", 20, right=True),
        Col("submitted (UTC)", 10),
    ]
    cells = [
        [
            short(j["job_id"], long),
            *([plain(j["name"])] if named else []),
            status(j),
            _progress(j),
            fmt(j["val_loss"], 3),
            plain(leaderboard.corpus_label(j["spec"].corpus)),
            duration(j),
            fmt(j["chars_per_second"], 0),
            time.strftime("%m-%d %H:%M", time.gmtime(j["submitted_at"])),  # as the dashboard
        ]
        for j in rows
    ]
    return fitted(cols, cells, width)


def sweep_table(sweep: dict, rows: list[dict], width: int | None = None, long: bool = False):
    """The sweep as Ray Tune's status table: one row per job, what varies, progress, losses."""
    from rich.text import Text

    names = leaderboard.varying(rows)
    counts = leaderboard.counts(rows)
    title = (
        f"sweep {short(sweep['sweep_id'], long)}"
        + (f" ({plain(sweep['name'])})" if sweep["name"] else "")
        + ": "
        + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
    )
    cols = [
        Col("job", 100),
        Col("status", 90),
        *[Col(leaderboard.short(n), 85 - k, right=True) for k, n in enumerate(names)],
        Col("iteration", 60, right=True),
        Col("loss/char", 50, right=True),
        Col("val", 55, right=True),
        Col("best val", 80, right=True),
    ]
    cells = [
        [
            short(j["job_id"], long),
            status(j),
            *[plain(leaderboard.fmt_value(v)) for v in leaderboard.params(j, names).values()],
            _progress(j),
            fmt(j["smooth_loss"], 3),
            fmt(j["val_loss"], 3),
            fmt(j["best_val_loss"], 3),
        ]
        for j in rows
    ]
    return fitted(cols, cells, width, title=Text(plain(title)), title_justify="left")


def compare_table(names: list[str], rows: list[dict], width: int | None = None, long=False):
    cols = [
        Col("#", 99, right=True),
        Col("job", 100),
        Col("status", 60),
        Col("best val", 95, right=True),
        *[Col(leaderboard.short(n), 85 - k, right=True) for k, n in enumerate(names)],
        Col("iteration", 50, right=True),
        Col("chars/s", 30, right=True),
        Col("last sample", 10, free=True, max_width=40),
    ]
    cells = [
        [
            str(r["rank"]),
            short(r["job_id"], long),
            r["status"],
            fmt(r["best_val_loss"], 4),
            *[plain(leaderboard.fmt_value(v)) for v in r["params"].values()],
            f"{r['iteration']}/{r['iterations'] or '?'}",
            fmt(r["chars_per_second"], 0),
            plain(r["sample"] or ""),
        ]
        for r in rows
    ]
    return fitted(cols, cells, width)
