"""The ``restyle`` command line. The only part of restyle that prints or exits.

``main`` runs a command and is its last line of defence: every error becomes
one line on stderr and an exit status. The commands live beside it:
``arguments`` (the table of commands and options), ``analyze``, ``draft``
(listing drafts), ``catalog`` (and ``plugins``), ``evaluate`` (``backtest``,
``replay``), and ``common`` (what they share).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

from restyle._errors import RestyleError
from restyle._pipeline import budget as _budget
from restyle._progress import BarSafeStream
from restyle._secrets import HTTP_LOGGERS, RedactingFilter, protect_loggers, redact
from restyle.cli.analyze import analyze_command
from restyle.cli.arguments import command_parser, ray_values_attached
from restyle.cli.catalog import catalog_command
from restyle.cli.common import UsageError
from restyle.cli.draft import draft_command
from restyle.cli.evaluate import backtest_command, replay_command
from restyle.cli.logs import logs_command
from restyle.cli.model import model_command
from restyle.cli.plugins import plugins_command
from restyle.cli.serve import serve_command

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``restyle`` command ``argv`` (by default the process's own
    arguments) and return its exit status: 0, 1 for an error (one line on
    stderr, with the traceback from ``-v`` on), 2 for a usage error, 130 when
    interrupted. No exception leaves it but ``SystemExit`` (argparse's
    ``--help``, ``--version`` and usage errors).

    Run as the process's command (``argv`` None: the ``restyle`` console
    script, ``python -m restyle``), it also ends the process with that status
    when a component call abandoned at its deadline is still running: a
    library's native code still running while the interpreter shuts down can
    abort the process (exit 134) after its output is written.
    """
    status = _command(sys.argv[1:] if argv is None else argv)
    # Interrupted, it ends now too, not once the analyses under way finish.
    if argv is None and (status == 130 or _budget.abandoned_calls() > 0):
        _flush()
        os._exit(status)
    return status


def _command(argv: Sequence[str]) -> int:
    verbosity = 0
    try:
        args = command_parser().parse_args(ray_values_attached(argv))
        verbosity = args.verbose
        with _logging_to_stderr(args.verbose):
            try:
                return _run(args)
            except UsageError as exc:
                sys.stderr.write(f"restyle {args.command}: error: {exc}\n")
                return 2
    except KeyboardInterrupt:
        _say("restyle: interrupted\n")
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        _report(exc, verbosity)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        return analyze_command(args)
    if args.command == "draft":
        return draft_command(args)
    if args.command == "catalog":
        return catalog_command(args)
    if args.command == "plugins":
        return plugins_command(args)
    if args.command == "backtest":
        return backtest_command(args)
    if args.command == "replay":
        return replay_command(args)
    if args.command == "model":
        return model_command(args)
    if args.command == "logs":
        return logs_command(args)
    if args.command == "serve":
        return serve_command(args)
    raise AssertionError(args)  # pragma: no cover - argparse enforces the commands


def _report(exc: Exception, verbosity: int) -> None:
    """``exc`` as one line on stderr, after its traceback from ``-v`` on.

    A RestyleError says what went wrong in words; anything else is a bug,
    named by its type, with a pointer to the traceback. Both are redacted."""
    try:
        said = str(exc)
    except Exception:  # an exception whose own message fails
        said = "(its message cannot be shown)"
    if isinstance(exc, RestyleError):
        message = said
    else:
        text = " ".join(said.split())
        text = text if len(text) <= 500 else text[:497] + "..."
        message = f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
        if not verbosity:
            message += " (run with -v for the traceback)"
    if verbosity:
        _say(redact("".join(traceback.format_exception(exc))))
    _say(f"restyle: error: {redact(message)}\n")


def _say(text: str) -> None:
    """Write to stderr, whatever state it is in: nothing is left to tell a failure to."""
    with suppress(OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()


@contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the length of the command, every line redacted.

    The filter sits on the handler, so it sees every record written, whichever
    logger made it. The HTTP clients' debug lines (request headers, bodies)
    are shown only from -vvv on.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    # Written around any progress bar (a catalog build's too): above it, never through it.
    handler = logging.StreamHandler(BarSafeStream(sys.stderr))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    quieted = [] if verbosity >= 3 else [logging.getLogger(name) for name in HTTP_LOGGERS]
    saved = root.level, [(logger, logger.level) for logger in quieted]
    root.addHandler(handler)
    root.setLevel(level)
    for logger in quieted:
        logger.setLevel(max(level, logging.INFO))
    protect_loggers()  # for handlers the CLI did not add
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for logger, previous in saved[1]:
            logger.setLevel(previous)
