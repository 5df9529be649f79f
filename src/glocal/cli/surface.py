"""What every ``glocal`` subcommand shares: the click group, the common options, settings and error handling.

This module imports only click and the standard library, so that ``glocal --help`` answers at once; each command
imports torch and glocal's engine when it runs. Results go to stdout (``--json``: one JSON document), progress and
logs to stderr. Exit codes: 0 success, 1 the work failed, 2 a usage error. The commands themselves are in
:mod:`glocal.cli.app` (explaining and indexing) and :mod:`glocal.cli.analysis` (pruning and evaluation).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = [
    "Settings",
    "cli",
    "glocal_command",
    "images_argument",
    "layer_option",
    "load_model",
    "main",
    "model_options",
    "parse_widths",
]

Command = Callable[..., Any]


def _example(text: str) -> str:
    r"""An epilog that click prints as it is (``\b`` stops click from rewrapping it)."""
    return "\b\nExample:\n  " + text


class Settings:
    """What every command shares: output format and error handling."""

    def __init__(self, as_json: bool, debug: bool, progress: bool) -> None:
        self.as_json = as_json
        self.debug = debug
        self.progress = progress


def _message(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return text or type(error).__name__


def _setup_logging(debug: bool) -> None:
    logger = logging.getLogger("glocal")
    if not any(getattr(handler, "_glocal_cli", False) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._glocal_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def _emit(settings: Settings, result: tuple[dict[str, Any] | None, list[str]]) -> None:
    document, lines = result
    if settings.as_json and document is not None:
        click.echo(json.dumps(document, indent=2))
    elif not settings.as_json:
        for line in lines:
            click.echo(line)


def glocal_command(name: str, example: str) -> Callable[[Command], click.Command]:
    """A subcommand of :data:`cli` with ``--json``, ``--debug`` and ``--no-progress``; the function gets a
    :class:`Settings` first and returns ``(json_document, text_lines)``. Any error that is not a usage error is
    printed in one line and exits with 1 (with ``--debug``: the traceback)."""

    def decorate(function: Command) -> click.Command:
        @functools.wraps(function)
        def body(*, as_json: bool, debug: bool, progress: bool, **options: Any) -> None:
            settings = Settings(as_json, debug, progress)
            _setup_logging(debug)
            try:
                _emit(settings, function(settings, **options))
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise
            except KeyboardInterrupt:
                if debug:
                    raise
                click.echo("glocal: interrupted; nothing was written", err=True)
                sys.exit(130)
            except Exception as error:
                if debug:
                    raise
                click.echo(f"Error: {_message(error)}", err=True)
                click.echo("(run again with --debug for the traceback)", err=True)
                sys.exit(1)

        options = [
            click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document."),
            click.option("--debug", is_flag=True, help="Show the traceback of an error."),
            click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr."),
        ]
        for option in options:
            body = option(body)
        return cli.command(name, epilog=_example(example))(body)

    return decorate


def model_options(function: Command) -> Command:
    """The options that name a model, its preprocessing and its composite."""
    options = [
        click.option(
            "--model",
            "-m",
            required=True,
            help="A preset (mobilenet_v2, mnist_cnn) or package.module:factory returning a torch.nn.Module.",
        ),
        click.option(
            "--weights",
            type=click.Path(path_type=Path, dir_okay=False),
            help="State dict for a factory's model (read with torch.load(..., weights_only=True)).",
        ),
        click.option("--transform", help="package.module:fn mapping pictures (N, C, H, W) in [0, 1] to model inputs."),
        click.option("--size", type=click.IntRange(1), help="Picture size for a factory's model [224]."),
        click.option("--channels", type=click.Choice(["1", "3"]), help="Picture channels for a factory's model [3]."),
        click.option(
            "--composite",
            default="auto",
            show_default=True,
            help="LRP rules: auto (chosen per architecture) or a zennit composite (EpsilonPlus, EpsilonGammaBox, ...).",
        ),
        click.option(
            "--canonizer",
            "canonizers",
            multiple=True,
            help="Canonizer class for a named composite (SequentialMergeBatchNorm, ResNetCanonizer, ...); repeatable.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def load_model(options: dict[str, Any]) -> Any:
    from . import loading

    channels = options.pop("channels")
    loaded = loading.load(
        options.pop("model"),
        weights=options.pop("weights"),
        transform=options.pop("transform"),
        size=options.pop("size"),
        channels=None if channels is None else int(channels),
    )
    composite, description = loading.make_composite(loaded, options.pop("composite"), options.pop("canonizers"))
    logging.getLogger("glocal.cli").debug("composite: %s", description)
    return loaded, composite, description


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="glocal", prog_name="glocal")
def cli() -> None:
    """glocal: what a model has learned, and where it uses it (Concept Relevance Propagation).

    Each command prints its result (--json: one JSON document) and writes its pictures atomically. Exit codes: 0
    success, 1 the work failed, 2 a usage error. Run `glocal COMMAND --help` for a command's options and example.
    """


images_argument = click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path), metavar="IMAGES..."
)
layer_option = click.option(
    "--layer", "-l", "layers", multiple=True, help="Layer whose channels are the concepts; repeatable [preset's]."
)


def parse_widths(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated counts such as 3,2, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise click.BadParameter(f"every width must be at least 1, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        cli.main(args=argv, prog_name="glocal", standalone_mode=True)
    except SystemExit as exit:
        return int(exit.code or 0) if not isinstance(exit.code, str) else 1
    return 0
