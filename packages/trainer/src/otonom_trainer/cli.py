"""The ``otonom-train`` command line."""

from __future__ import annotations

import argparse
import sys

import otonom_schema

NOT_BUILT = 3


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otonom-train",
        description=(
            "Train a behaviour-cloning policy that imitates the otonom ensemble, export it to "
            "ONNX and check it for production."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=(
            f"otonom-train {otonom_schema.__version__} (state schema "
            f"{otonom_schema.SCHEMA_VERSION}, fingerprint {otonom_schema.schema_fingerprint()})"
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "pipeline",
        help="data -> backtest -> dataset -> training -> export -> evaluation (not built yet)",
        description="Run the whole guide end to end on the embedded default (not built yet).",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    print(
        f"otonom-train {args.command}: not built yet. The state schema is ready "
        f"(otonom-schema {otonom_schema.SCHEMA_VERSION}, {otonom_schema.STATE_DIM} features, "
        f"fingerprint {otonom_schema.schema_fingerprint()}); the store, backtester and trainer "
        "land in later releases (see README: Status).",
        file=sys.stderr,
    )
    return NOT_BUILT


if __name__ == "__main__":
    sys.exit(main())
