"""Command line: parse options, build the config, call one library function, return an ExitCode.

Nothing here imports TensorFlow at module level, so ``digits --help`` answers at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.errors import DigitReaderError, ExitCode

log = logging.getLogger("pipeline")


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr)


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
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--verbose", "-v", is_flag=True)
def train(mnist, output, epochs, limit, seed, quiet, verbose) -> int:
    """Train the digit model on MNIST's training split and write it with its card."""
    _setup_logging(quiet, verbose)
    from pipeline.train import TrainSettings, train_and_save

    settings = TrainSettings(seed=seed)
    if epochs is not None:
        settings = settings.replace(epochs=epochs)
    train_and_save(mnist, output, settings, limit=limit, progress=not quiet and sys.stderr.isatty())
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
