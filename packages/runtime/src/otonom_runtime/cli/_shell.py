"""The shell every command of ``otonom`` and ``otonom-train`` runs in: ``--version`` and
``--debug`` on every parser (``add_global_flags``), and ``run_cli``, which turns an exception into
one ``error: ...`` line and an exit status (the rules are in ``otonom_runtime.cli``'s docstring).
"""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = ["Handler", "add_global_flags", "error_text", "run_cli"]

Handler = Callable[[argparse.Namespace], int]


class _PrintVersion(argparse.Action):
    """``--version``: print the text as it is (argparse's own action re-wraps it) and exit."""

    def __init__(
        self,
        option_strings: Sequence[str],
        version: str,
        dest: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=help)
        self.version = version

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(self.version)
        parser.exit()


def add_global_flags(parser: argparse.ArgumentParser, *, version: str) -> None:
    """Add ``--version`` (prints ``version``) to ``parser`` and ``--debug`` to it and to every
    sub-command below it, so that ``--debug`` may come before or after the command name."""
    parser.add_argument(
        "--version", action=_PrintVersion, version=version, help="print the version"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, show the full traceback instead of the one-line message",
    )
    todo = [parser]
    while todo:
        for action in todo.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                    sub.add_argument(
                        "--debug",
                        action="store_true",
                        default=argparse.SUPPRESS,  # keeps the top-level value when not given
                        help="on an error, show the full traceback instead of the one-line message",
                    )
                    todo.append(sub)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
        return str(exc.args[0])  # KeyError would repr() its message
    return str(exc)


def _fail(message: str, stream: TextIO) -> int:
    """Print ``error: message``; lines after the first are indented, so exactly one line of
    the output starts with ``error:``."""
    first, *rest = message.strip().splitlines() or [""]
    lines = [f"error: {first}", *(r if r.startswith(" ") else "  " + r for r in rest)]
    print("\n".join(lines), file=stream)
    return 1


def _reader_gone() -> bool:
    """Whether stdout's reader closed the pipe (``otonom runs list | head``): then stdout is
    pointed at os.devnull, so that the interpreter's last flush stays quiet too."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()  # a pipe whose reader closed polls as an error
        poller.register(fd, select.POLLOUT)
        gone = any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return gone


def run_cli(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    expected: Callable[[BaseException], str | None],
) -> int:
    """Parse ``argv`` with ``parser`` (made with ``add_global_flags``), run the chosen command's
    ``handler`` and return its exit status.

    An exception becomes one ``error:`` line on stderr and exit status 1: ``expected(exc)``
    gives the message of an error raised on purpose, None for anything else, which prints the
    exception's type and message and a hint to rerun with ``--debug``. With ``--debug`` every
    exception propagates with its traceback. When the reader of stdout went away (a pipe into
    ``head``), the command ends quietly with status 1.
    """
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        _fail("interrupted", sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            return 1
        message = expected(exc)
        if message is None:
            text = " ".join(error_text(exc).split())
            message = (
                f"{type(exc).__name__}{': ' + text if text else ''} (unexpected; rerun with "
                "--debug for the traceback)"
            )
        return _fail(message, sys.stderr)
