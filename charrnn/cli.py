"""The `charrnn` command: train and sample locally, no Redis or Celery involved.

    charrnn train --corpus input.txt --checkpoint model.npz
    charrnn sample --checkpoint model.npz --length 500 --prime "ROMEO:"

Errors in the user's input are one line on stderr and exit code 2; a diverged run exits 1.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from . import checkpoint, recipes
from .budget import iterations_for_minutes
from .config import Config
from .data import read_corpus
from .errors import CharRNNError, DivergedError
from .exits import EXIT_INTERRUPTED, Failure
from .options import F, config_options, given
from .sampling import MAX_LENGTH
from .trainer import Hooks, Trainer

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

EXIT_DIVERGED = 1  # training stopped on a non-finite loss
# the others are in exits: EXIT_USAGE (2) bad input, EXIT_INTERRUPTED (130) Ctrl-C after the checkpoint


def hyperparameter_options(f: F) -> F:
    """Every Config field as an option (generated from Config; the orchestrator's submit and
    sweep use the same generator)."""
    return config_options()(f)


def recipe_options(f: F) -> F:
    """--recipe and --minutes, shared with `orchestrator submit`."""
    f = click.option(
        "--minutes",
        type=click.FloatRange(min=0, min_open=True, max=10**6),
        default=None,
        help="train for this budget of wall-clock minutes: the iterations are set from a "
        "short timed probe and recorded, so the run is exact and its schedule ends with "
        "the budget",
    )(f)
    return click.option(
        "--recipe",
        type=click.Choice(list(recipes.RECIPES)),
        default=None,
        help="start from a measured recipe (explicit options override its values; its "
        "budget applies unless --iterations, --epochs or --minutes is given): "
        + recipes.help_text(),
    )(f)


def config_from_options(kw: dict[str, Any]) -> Config:
    """A Config from the hyperparameter options in kw (removing them from kw): the ones given,
    Config's defaults for the rest."""
    return Config.from_dict(given(kw))


def run(group: click.Group, prog_name: str) -> None:
    """Run a Click group so that every error, usage errors included, is one line on stderr
    (`error: ...`) with its exit code, never a traceback or a multi-line usage block."""
    try:
        code = group.main(prog_name=prog_name, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        e.show()  # the bare command: its usage text, as click prints it, not squashed in a line
        sys.exit(e.exit_code)
    except click.ClickException as e:
        message = " ".join(e.format_message().split())
        click.echo(f"error: {message}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charrnn")
def cli() -> None:
    """Train and sample character-level RNN language models with NumPy."""


def main() -> None:
    run(cli, "charrnn")


class ConsoleHooks(Hooks):
    """A progress bar with iteration, smoothed loss and chars/second, and samples as they come."""

    progress_seconds = 0.2

    def __init__(
        self, progress: Progress, task: TaskID, quiet_samples: bool, checkpoint_path: str | None
    ):
        self.progress, self.task = progress, task
        self.quiet_samples, self.checkpoint_path = quiet_samples, checkpoint_path

    def on_progress(self, t: Trainer) -> None:
        val = "" if t.val_loss is None else f" val {t.val_loss:.3f}"
        self.progress.update(
            self.task,
            completed=t.iteration,
            info=f"loss {t.train_loss:.3f}/char{val} {t.chars_per_second:,.0f} chars/s",
        )

    def on_sample(self, t: Trainer, text: str) -> None:
        self.progress.console.print(f"--- sample at iteration {t.iteration} ---", style="dim")
        self.progress.console.print(text, markup=False, highlight=False)

    def on_eval(self, t: Trainer, val_loss: float | None) -> None:
        if val_loss is not None:
            self.progress.console.print(
                f"iteration {t.iteration}: val {val_loss:.4f} nats/char "
                f"({val_loss / math.log(2):.4f} bits/char)",
                style="dim",
            )

    def on_checkpoint(self, t: Trainer) -> None:
        if self.checkpoint_path:
            checkpoint.save(t, self.checkpoint_path)

    interrupted = False

    def should_stop(self, t: Trainer) -> bool:
        return self.interrupted


@cli.command()
@click.option("--corpus", required=True, help="UTF-8 text file, or builtin:python-docs")
@hyperparameter_options
@click.option(
    "--checkpoint",
    "checkpoint_path",
    default=None,
    help="write the training state here (atomically), every --checkpoint-every and at the end",
)
@click.option("--checkpoint-every", type=int, default=0, show_default=True)
@click.option(
    "--resume",
    "resume_path",
    default=None,
    help="continue exactly from this checkpoint (same corpus). Options given with it "
    "override the checkpoint's: the learning rate, iterations or epochs, clips, "
    "schedule, warm-up, evaluation and sample settings take effect from the next "
    "step (a new learning rate is the new base rate, times any rollback halving "
    "stored in the checkpoint); any other option that differs from the "
    "checkpoint's (sizes, cell, batch size, optimizer and its betas, seed, dtype, "
    "dropout, val-fraction) is refused",
)
@click.option("--json", "as_json", is_flag=True, help="one JSON object with the results on stdout")
@recipe_options
def train(
    corpus: str,
    checkpoint_path: str | None,
    checkpoint_every: int,
    resume_path: str | None,
    as_json: bool,
    recipe: str | None,
    minutes: float | None,
    **hyper: Any,
) -> None:
    """Train a model on a corpus by sequential online learning."""
    check_checkpoint_path(checkpoint_path, checkpoint_every)
    if resume_path and (recipe or minutes is not None):
        raise Failure(
            "--recipe and --minutes start a run; to continue one, --resume with --iterations"
        )
    trainer = make_trainer(corpus, resume_path, hyper, recipe, minutes)
    t0, start_iteration = time.perf_counter(), trainer.iteration
    if run_with_progress(trainer, checkpoint_path, checkpoint_every, as_json) == "stopped":
        where = ""
        if checkpoint_path:
            checkpoint.save(trainer, checkpoint_path)
            where = f"; checkpoint {checkpoint_path} (resume with --resume)"
        raise Failure(f"interrupted at iteration {trainer.iteration}{where}", EXIT_INTERRUPTED)
    result = train_result(trainer, start_iteration, time.perf_counter() - t0, checkpoint_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    val = (
        "no validation split"
        if result["val_loss"] is None
        else f"val {result['val_loss']:.4f} nats/char ({result['val_bits_per_char']:.4f} bits/char)"
    )
    click.echo(
        f"trained {trainer.iteration} iterations, {result['chars']:,} chars in "
        f"{result['seconds']:.1f} s ({result['chars_per_second']:,.0f} chars/s); {val}"
        + (f"; checkpoint {checkpoint_path}" if checkpoint_path else "")
    )


def check_checkpoint_path(checkpoint_path: str | None, checkpoint_every: int) -> None:
    """Found now, not after hours of training."""
    if checkpoint_every < 0:
        raise Failure(f"checkpoint-every must be >= 0, got {checkpoint_every}")
    if checkpoint_path:
        folder = os.path.dirname(os.path.abspath(checkpoint_path))
        if os.path.isdir(checkpoint_path) or not os.path.isdir(folder):
            raise Failure(
                f"cannot write checkpoint {checkpoint_path}: "
                + (
                    "it is a directory"
                    if os.path.isdir(checkpoint_path)
                    else f"no such directory {folder}"
                )
            )
        if os.path.exists(checkpoint_path) and not os.path.isfile(checkpoint_path):
            raise Failure(f"cannot write checkpoint {checkpoint_path}: it is not a regular file")


def make_trainer(
    corpus: str,
    resume_path: str | None,
    hyper: dict[str, Any],
    recipe: str | None = None,
    minutes: float | None = None,
) -> Trainer:
    """A fresh trainer (a recipe's values under the options given, for a budget in minutes
    when one is asked), or the checkpoint's with the options given (those a resume may change;
    the checkpoint refuses the others)."""
    try:
        text = read_corpus(corpus)
        if not resume_path:
            return Trainer(budgeted_config(text, recipe, minutes, given(hyper)), text)
        ck = checkpoint.load(resume_path)
        changed = given(hyper)
        saved = ck.config.to_dict()
        for a, b in (("iterations", "epochs"), ("epochs", "iterations")):
            if a in changed:  # a new length replaces the saved one, whichever kind it was
                saved[b] = None
        return ck.trainer(text, Config.from_dict({**saved, **changed}))
    except CharRNNError as e:
        raise Failure(str(e)) from None


def budgeted_config(
    text: str, recipe: str | None, minutes: float | None, options: dict[str, Any]
) -> Config:
    """The config a run is made with: the recipe's values, the options over them, and a budget
    in minutes (given, or the recipe's) turned into iterations by a timed probe. The config
    records the iterations, so it reproduces the same bits whatever the machine."""
    if minutes is not None and (options.get("iterations") or options.get("epochs")):
        raise Failure("give --minutes, --iterations or --epochs, not two of them")
    config = Config.from_dict(recipes.expand(recipe, options))
    budget_minutes = recipes.minutes_for(recipe, options, minutes)
    if budget_minutes is None:
        return config
    budget = iterations_for_minutes(config, text, budget_minutes)
    click.echo(
        f"budget: {budget_minutes:g} min -> {budget.iterations} iterations "
        f"({budget.seconds_per_step * 1000:.3g} ms a step, measured for "
        f"{budget.probe_seconds:.1f} s)",
        err=True,
    )
    return config.replace(iterations=budget.iterations, epochs=None)


def run_with_progress(
    trainer: Trainer, checkpoint_path: str | None, checkpoint_every: int, as_json: bool
) -> str:
    """Trainer.run under a progress bar on stderr; Ctrl-C stops it between two windows."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)  # whole lines
    with Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
        transient=as_json,
    ) as progress:
        task = progress.add_task(
            "train", total=trainer.total_iterations, completed=trainer.iteration, info=""
        )
        hooks = ConsoleHooks(progress, task, as_json, checkpoint_path)

        def interrupt(signum: int, frame: FrameType | None) -> None:
            # Ctrl-C: stop between two windows (within progress_seconds), never inside an
            # update, so the checkpoint written after it resumes exactly
            hooks.interrupted = True

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            return trainer.run(hooks, checkpoint_every=checkpoint_every)
        except DivergedError as e:
            raise Failure(str(e), EXIT_DIVERGED) from None
        except CharRNNError as e:
            raise Failure(str(e)) from None
        finally:
            signal.signal(signal.SIGINT, previous)


def train_result(
    trainer: Trainer, start_iteration: int, seconds: float, checkpoint_path: str | None
) -> dict[str, Any]:
    """What `charrnn train --json` prints."""
    chars = (
        (trainer.iteration - start_iteration)
        * trainer.config.seq_length
        * trainer.config.batch_size
    )
    s = trainer.stats()
    return {
        "iterations": trainer.iteration,
        "chars": chars,
        "seconds": round(seconds, 3),
        "chars_per_second": chars / seconds if seconds > 0 else 0.0,
        "smooth_loss": s["smooth_loss"],  # nats/char, like val_loss
        "smooth_loss_per_char": s["smooth_loss"],  # the same: kept for older readers
        "learning_rate": s["learning_rate"],
        "val_loss": s["val_loss"],
        "val_bits_per_char": s["val_bits_per_char"],
        "best_val_loss": s["best_val_loss"],
        "checkpoint": checkpoint_path,
        "config": trainer.config.to_dict(),
    }


def sample_options(f: F) -> F:
    """Options shared with `orchestrator sample`, so both print the same text."""
    for o in reversed(
        [
            click.option(
                "--length",
                type=click.IntRange(0, MAX_LENGTH),
                default=500,
                show_default=True,
                help=f"characters to draw (at most {MAX_LENGTH:,})",
            ),
            click.option("--temperature", type=float, default=1.0, show_default=True),
            click.option(
                "--top-k", type=int, default=None, help="sample among the k likeliest only"
            ),
            click.option(
                "--prime",
                default=None,
                help="text the model reads first (starts from a zero state)",
            ),
            click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
            click.option("--argmax", is_flag=True, help="always take the likeliest character"),
        ]
    ):
        f = o(f)
    return f


def sample_text(
    source: str | bytes | checkpoint.Checkpoint,
    length: int,
    temperature: float,
    top_k: int | None,
    prime: str | None,
    seed: int,
    argmax: bool,
    name: str | None = None,
) -> str:
    """The text `charrnn sample` prints for a checkpoint (path, bytes or loaded) and options."""
    try:
        ck = source if isinstance(source, checkpoint.Checkpoint) else checkpoint.load(source, name)
        return ck.sample(
            length=length,
            temperature=temperature,
            top_k=top_k,
            prime=prime,
            seed=seed,
            argmax=argmax,
        )
    except CharRNNError as e:
        raise Failure(str(e)) from None


@cli.command()
@click.option("--checkpoint", "checkpoint_path", required=True, help="a checkpoint file (.npz)")
@sample_options
def sample(
    checkpoint_path: str,
    length: int,
    temperature: float,
    top_k: int | None,
    prime: str | None,
    seed: int,
    argmax: bool,
) -> None:
    """Print text drawn from a trained model: only the text, on stdout."""
    click.echo(sample_text(checkpoint_path, length, temperature, top_k, prime, seed, argmax))


if __name__ == "__main__":
    main()
