"""benchmarks/run_all.py's busy mark: the cores other processes kept busy while a benchmark ran, the benchmark's own
process tree left out."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from run_all import busy_cpu_seconds, run_measured  # noqa: E402

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"


def test_busy_seconds_add_up_procs_busy_fields():
    stat = "cpu  1760460 588744 291799 646217 13971 0 3433 21868 0 0\ncpu0 716865 297460 122989 509369 3904 0 682 10936 0 0\n"
    ticks = 1760460 + 588744 + 291799 + 0 + 3433 + 21868  # user nice system irq softirq steal; not idle or iowait
    assert busy_cpu_seconds(stat) == ticks / os.sysconf("SC_CLK_TCK")


def test_the_benchmarks_own_processes_are_not_counted_as_others(monkeypatch):
    """A benchmark whose child process burns 1.5 CPU seconds: that time is the benchmark's, so what is left for the
    other processes is the machine's busy time less at least those 1.5 s (read from /proc/stat around the run)."""
    command = [
        sys.executable,
        "-c",
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BURN.format(seconds=1.5)!r}])",
    ]
    before = busy_cpu_seconds(Path("/proc/stat").read_text())
    result, seconds, others = run_measured(command)
    machine = busy_cpu_seconds(Path("/proc/stat").read_text()) - before
    assert result.returncode == 0 and seconds >= 1.5
    assert others * seconds <= machine - 1.5 + 0.05  # the grandchild's 1.5 s went to the benchmark
