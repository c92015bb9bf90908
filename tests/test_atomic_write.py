"""Every results file is written through ``files.atomic_write``: a writer that fails or a
process killed mid-write leaves the previous file complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from moe_retriever.files import atomic_write, atomic_write_text


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")

    def half_then_fail(tmp):
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old complete file")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from moe_retriever.files import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half of the new')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_write(Path(sys.argv[1]), write)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"old complete file"
