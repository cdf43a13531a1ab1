"""Peak memory of one `litgpt-inheritune` run in a child process: torch's counters inside it, its peak RSS, and
nvidia-smi's figure for its pid; and each rank's peak as pretrain prints it. Used by benchmarks/gpu_check.py."""

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

BIN = Path(sys.executable).parent

# runs the `litgpt-inheritune` command inside this child process and writes its peak memory to argv[1]
MEASURED_RUN = """import json, resource, sys, torch
from litgpt_inheritune.cli import main
out, sys.argv = sys.argv[1], sys.argv[2:]  # argv[0]: the console script, which DDP's launcher runs for rank 1+
try:
    main()
finally:
    peak = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        peak.update(max_allocated_bytes=torch.cuda.max_memory_allocated(), max_reserved_bytes=torch.cuda.max_memory_reserved())
    open(out, "w").write(json.dumps(peak))
"""


def measured_run(arguments: list[str], out_dir: Path, env: dict) -> dict:
    """Runs `litgpt-inheritune <arguments>` in a child process; its peak memory (torch's counters inside it, peak
    RSS, and nvidia-smi's figure for its pid sampled every 0.2 s)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    peak_file = out_dir.parent / f"{out_dir.name}.peak.json"
    process = subprocess.Popen(
        [sys.executable, "-c", MEASURED_RUN, str(peak_file), str(BIN / "litgpt-inheritune"), *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    smi = {"max_mib": 0}
    if torch.cuda.is_available() and shutil.which("nvidia-smi"):
        threading.Thread(target=poll_nvidia_smi, args=(process, smi), daemon=True).start()
    start = time.perf_counter()
    log = process.communicate()[0]
    seconds = time.perf_counter() - start
    (out_dir.parent / f"{out_dir.name}.log").write_text(log)
    if process.returncode != 0:
        sys.exit(
            f"gpu_check: `litgpt-inheritune {' '.join(arguments[:2])}` failed ({process.returncode}):\n{log[-3000:]}"
        )
    peak = json.loads(peak_file.read_text())
    if smi["max_mib"]:
        peak["nvidia_smi_bytes"] = smi["max_mib"] * 2**20
    return {"out_dir": out_dir, "peak": peak, "seconds": seconds, "log": log}


def poll_nvidia_smi(process: subprocess.Popen, smi: dict) -> None:
    while process.poll() is None:
        result = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
        )
        for line in result.stdout.splitlines():
            pid, used = (field.strip() for field in line.split(","))
            if pid == str(process.pid) and used.isdigit():
                smi["max_mib"] = max(smi["max_mib"], int(used))
        time.sleep(0.2)


def rank_peaks(log: str) -> list[float]:
    """Each rank's peak memory in GB, from pretrain's "Peak memory per rank (...): a, b GB" line."""
    match = re.search(r"Peak memory per rank \([^)]*\): ([\d., ]+) GB", log)
    if match is None:
        sys.exit(f"gpu_check: pretrain printed no peak memory per rank:\n{log[-3000:]}")
    return [float(value) for value in match.group(1).split(",")]
