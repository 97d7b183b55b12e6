"""Command line: parse options, build the config, call one library function, return an ExitCode.

Nothing here imports TensorFlow or ONNX Runtime at module level, so ``digits --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.errors import DigitReaderError, ExitCode

log = logging.getLogger("pipeline")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    # Other libraries (Pillow, joblib) stay at INFO; only our own loggers go to DEBUG.
    logging.basicConfig(level=max(level, logging.INFO), format="%(levelname)s %(message)s", stream=sys.stderr)
    log.setLevel(level)  # also when a host (pytest, a notebook) configured logging first


@contextlib.contextmanager
def _sigterm_interrupts():
    """Treat SIGTERM (cron's ``timeout``, a shutdown) like Ctrl-C: stop, clean up, exit 130."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _show_progress(quiet: bool) -> bool:
    """A progress bar only for a person watching: stderr is a terminal and not --quiet."""
    return not quiet and sys.stderr.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digits")
def cli() -> None:
    """Read handwritten numbers off scanned forms and cheques."""


@cli.command()
@click.option("--mnist", type=click.Path(path_type=Path), default=None,
              help="MNIST folder (IDX files) or mnist.npz; default $DIGITS_MNIST, else Keras' download.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("models/digits.keras"),
              show_default=True, help="Where to write the model; its card goes beside it.")
@click.option("--epochs", type=int, default=None, help="Override the number of epochs (smoke runs).")
@click.option("--limit", type=int, default=None, help="Train on the first N training digits only (smoke runs).")
@click.option("--real", type=click.Path(path_type=Path), default=None,
              help="Folder of real handwriting to measure on (never trained on); skipped when absent.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--verbose", "-v", is_flag=True)
def train(mnist, output, epochs, limit, real, seed, quiet, verbose) -> int:
    """Train the digit model on MNIST's training split and write it with its card."""
    _setup_logging(quiet, verbose)
    from pipeline.train import TrainSettings, train_and_save

    settings = TrainSettings(seed=seed)
    if epochs is not None:
        settings = settings.replace(epochs=epochs)
    train_and_save(mnist, output, settings, limit=limit, progress=not quiet and sys.stderr.isatty(),
                   real_dir=real if real is not None and real.is_dir() else None)
    return ExitCode.ok


@cli.command("export")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), default=Path("models/digits.keras"),
              show_default=True, help="Trained Keras model with its card beside it.")
def export(model) -> int:
    """Write the ONNX file the batch job runs for an already trained model (`digits train` writes it too)."""
    from pipeline.train import export_saved_model

    runtime = export_saved_model(model)
    click.echo(f"wrote {model.with_name(runtime['name'])} (sha256 {runtime['sha256'][:12]}…) and its card entry",
               err=True)
    return ExitCode.ok


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("output"),
              show_default=True, help="Folder for report.json, fields.csv, digits.csv, fields/ and the run state.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML settings (default: configs/default.yaml).")
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file; overrides classify.model.")
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=None,
              help="Page worker processes, 0 = one per core; overrides run.workers.")
@click.option("--force", is_flag=True, help="Re-read every document, even those already read and unchanged.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors; no progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Debug messages, with tracebacks of internal errors.")
@click.option("--raise-on-error", is_flag=True, help="Stop at the first unexpected per-document error (debugging).")
def process(input_path, output, config_path, model, jobs, force, quiet, verbose, raise_on_error) -> int:
    """Read every scan under INPUT (PNG, JPEG, TIFF, BMP, WebP, PDF) into reports in --output.

    Documents already read and unchanged (same content, model and settings) are reused,
    so a nightly run on a growing folder reads only what is new. Exit codes: 0 all read,
    1 could not run, 2 some documents failed (listed in report.json), 75 another run holds
    --output, 130 interrupted.
    """
    _setup_logging(quiet, verbose)
    from pipeline.batch import RunOptions, run_batch
    from pipeline.config import load_config

    overrides = {}
    if model is not None:
        overrides["classify.model"] = model
    if jobs is not None:
        overrides["run.workers"] = jobs
    config = load_config(config_path, overrides)
    options = RunOptions(force=force, raise_on_error=raise_on_error, progress=_show_progress(quiet))
    with _sigterm_interrupts():
        summary = run_batch(input_path, output, config, options)
    counts = summary.counts
    line = (
        f"{counts['documents']} documents ({counts['read']} read, {counts['reused']} reused, "
        f"{counts['errors']} failed, {counts['skipped_files']} files skipped), {counts['pages']} pages, "
        f"{counts['fields']} fields ({counts['flagged']} flagged) -> {output / 'report.json'}"
    )
    log.log(logging.WARNING if summary.failed else logging.INFO, "%s", line)
    return summary.exit_code


@cli.command("eval")
@click.option("--mnist", type=click.Path(path_type=Path), default=None,
              help="MNIST folder or mnist.npz; default $DIGITS_MNIST, else Keras' download.")
@click.option("--real", type=click.Path(path_type=Path), default=None,
              help="Folder of real handwriting (CVL digits, ORAND-CAR amounts); parts absent are skipped.")
@click.option("--pages", type=click.Path(file_okay=False, path_type=Path), default=Path("samples"),
              show_default=True, help="Scans with truth JSONs beside them, read by the batch job and scored.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--model", "-m", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=Path("output/eval.md"),
              show_default=True, help="Where to write the same figures as markdown tables.")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--verbose", "-v", is_flag=True)
def evaluate(mnist, real, pages, config_path, model, report, quiet, verbose) -> int:
    """Measure the model and the whole pipeline; print and write markdown tables."""
    _setup_logging(quiet, verbose)
    from pipeline.config import load_config
    from pipeline.measure import run_evaluation

    config = load_config(config_path, {"classify.model": model} if model is not None else None)
    markdown = run_evaluation(config, mnist, real, pages)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown, encoding="utf-8")
    click.echo(markdown)
    return ExitCode.ok


@cli.command()
@click.option("--mnist", type=click.Path(path_type=Path), default=None,
              help="MNIST folder or mnist.npz (only its test split is drawn); default $DIGITS_MNIST.")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("samples"),
              show_default=True)
@click.option("--pages", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--seed", type=int, default=2024, show_default=True)
@click.option("--dpi", type=click.IntRange(min=100, max=600), default=None,
              help="Scan every page at this resolution (default: 150 or 200, drawn per page).")
@click.option("--cvl", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Write real writers' digits from this CVL digits .npz instead of MNIST's (for measuring only).")
@click.option("--fax", is_flag=True,
              help="Send every page as a standard-mode fax: black and white TIFF (Group 4) at 204 × 98 dpi.")
@click.option("--bilevel", is_flag=True,
              help="Scan every page black and white: TIFF (Group 4) at its own resolution.")
def samples(mnist, output, pages, seed, dpi, cvl, fax, bilevel) -> int:
    """Generate synthetic cheques and forms with truth JSONs (MNIST test-split digits, or CVL's with --cvl)."""
    from pipeline.samples import write_samples

    if fax and bilevel:
        raise click.UsageError("--fax pages are black and white already; give one of --fax and --bilevel")
    written = write_samples(mnist, output, pages, seed, dpi, cvl, fax, bilevel)
    click.echo(f"wrote {len(written)} pages to {output}", err=True)
    return ExitCode.ok


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and map every outcome to an ExitCode."""
    try:
        result = cli.main(args=argv, prog_name="digits", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return ExitCode.interrupted
    except click.ClickException as exc:
        exc.show()
        return ExitCode.could_not_run
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return ExitCode.interrupted
    except DigitReaderError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    if isinstance(result, int):
        return result
    return ExitCode.ok


if __name__ == "__main__":
    sys.exit(main())
