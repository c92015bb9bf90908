"""The README's first command: one line that installs and then runs a short first job."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from moe_retriever.cli import build_parser
from moe_retriever.commands.common import config_overrides
from moe_retriever.config import load_config

ROOT = Path(__file__).resolve().parents[1]
INSTALL = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    'pip install -e ".[datasets]"'
)
# one seed of ad_data trains in 2-4 min on 2 cores at 15 epochs (measured; README.md)
EPOCH_BUDGET = 15


def first_command() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*1\..*?```bash\n(.*?)```", readme, re.S)
    assert block is not None, "README.md: no first ```bash block after **1."
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 1, "the first command must stay a single line"
    return lines[0]


def test_the_first_command_installs_then_runs_a_short_job():
    command = first_command()
    assert command.startswith(INSTALL + " && moe-retriever train ")
    argv = shlex.split(command.split(" && moe-retriever ", 1)[1])
    args = build_parser().parse_args(argv)
    cfg = load_config(ROOT / args.config, config_overrides(args))
    assert cfg.data.name == "ad_data"
    assert len(cfg.train.seeds) * cfg.train.epochs <= EPOCH_BUDGET
    assert cfg.train.warmup_epochs < cfg.train.epochs  # retrieval trains too
