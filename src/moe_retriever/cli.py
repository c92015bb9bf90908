"""The ``moe-retriever`` command: one module per subcommand under ``commands/``."""

from __future__ import annotations

import argparse
import sys

from .commands import analyze, compare, datasets, evaluate, predict, train, tune
from .errors import MoERetrieverError

COMMANDS = [train, evaluate, compare, datasets, predict, analyze, tune]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moe-retriever",
        description="MoE-Retriever: retrieve embeddings of missing modalities with a sparse MoE.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MoERetrieverError as exc:
        # a user error: one line; any other exception is a bug and keeps its traceback
        print(f"moe-retriever: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
