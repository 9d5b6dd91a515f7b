"""Loss curves of jobs as a PNG: smoothed training loss and validation loss (nats/char) against
characters seen, one line per job in each panel, labelled by what varies among the jobs.

matplotlib is an optional extra (`pip install '.[plot]'`): the worker pool and every other
command run without it.
"""

from __future__ import annotations

from .errors import BadInput

MISSING = (
    "plot needs matplotlib, the optional extra charrnn[plot]: pip install matplotlib "
    "(or, in a clone, pip install '.[plot]')"
)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BadInput(MISSING) from None
    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def figure(lines: list[tuple[str, dict]], title: str):
    """A figure with two panels; `lines` are (label, leaderboard.curves(...)), one per job.
    Colors follow matplotlib's default cycle in the order given (rank order from the caller)."""
    plt = _pyplot()
    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 5), sharey=True, layout="constrained")
    for i, (label, c) in enumerate(lines):
        color = f"C{i % 10}"
        few = len(c["train_chars"]) < 30  # a job stopped early: show its points
        train_ax.plot(
            c["train_chars"],
            c["train_loss"],
            color=color,
            linewidth=1.2,
            label=label,
            marker="o" if few else None,
            markersize=3,
        )
        val_ax.plot(
            c["val_chars"],
            c["val_loss"],
            color=color,
            linewidth=1.5,
            marker="o",
            markersize=3,
            label=label,
        )
    train_ax.set_title("training loss (smoothed)")
    val_ax.set_title("validation loss")
    for ax in (train_ax, val_ax):
        ax.set_xlabel("characters seen")
        ax.grid(True, alpha=0.3)
    train_ax.set_ylabel("nats / character")
    val_ax.legend(fontsize="small", loc="upper right")
    fig.suptitle(title)
    return fig


def write_png(lines: list[tuple[str, dict]], title: str, path: str, dpi: int = 100) -> None:
    fig = figure(lines, title)
    try:
        fig.savefig(path, format="png", dpi=dpi)
    except OSError as e:
        raise BadInput(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        _pyplot().close(fig)


def plot_jobs(store, ids: tuple[str, ...], path: str, title: str | None) -> int:
    """The loss curves of the jobs behind some sweep and job ids, best first, as a PNG; returns
    how many jobs were drawn."""
    from . import leaderboard

    found, sws = leaderboard.collect(store, ids)
    names = leaderboard.varying(found)
    hist = leaderboard.histories(store, found)
    lines = [
        (leaderboard.label(j, names), leaderboard.curves(j, hist[j["job_id"]]))
        for j in leaderboard.rank(found)
    ]
    if title is None:
        title = ", ".join(f"sweep {s['name'] or s['sweep_id'][:8]}" for s in sws) or ", ".join(
            j["job_id"][:8] for j in found
        )
    write_png(lines, title, path)
    return len(lines)
