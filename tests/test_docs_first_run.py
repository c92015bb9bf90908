"""The README's first command: one line that installs and then runs a short first job."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from _tiny_run import TINY
from moe_retriever.cli import build_parser, main
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


def _shape(line: str) -> str:
    """A printed line with its numbers replaced, e.g. ``| test | N [N, N] | ...``."""
    return re.sub(r"\s+", " ", re.sub(r"-?\d+(\.\d+)?", "N", line)).strip()


# lines of `train`'s output whose shape does not depend on the data
SHAPED = ("| split", "|---", "| test", "| val", "holdout, seeds", "seed N: best epoch")


def _fenced_lines(markdown: str) -> list[str]:
    """The lines inside the markdown's ``` blocks."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_the_tutorial_shows_trains_real_output(tmp_path, capsys):
    tutorial = (ROOT / "docs" / "tutorial.md").read_text()
    section = tutorial.split("## 3. Train", 1)[1].split("## 4.", 1)[0]
    shown = [s for s in map(_shape, _fenced_lines(section)) if s.startswith(SHAPED)]
    assert any(s.startswith("| test") for s in shown), "the tutorial shows no results table"
    sets = [a for item in TINY for a in ("--set", item)]
    argv = ["train", *sets, "--seeds", "0", "1", "2", "--epochs", "1", "--set", "train.warmup_epochs=0"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    printed = {_shape(line) for line in capsys.readouterr().out.splitlines()}
    printed |= {_shape(line) for line in (tmp_path / "run" / "results.md").read_text().splitlines()}
    for line in shown:
        assert line in printed, line
