"""Peak memory and time of `init` on a synthetic ~1.2 GB, 24-block reference, keeping 4 blocks (or any shape).

Reports, for `init` and for a plain `torch.load` of the same reference, the peak resident memory above the
post-import baseline divided by the target's bytes (goal for init: <= 1.5, better <= 1.0), and init's wall time
divided by the time to copy the kept number of bytes from the reference file (page cache warm for both; the copy in
a fresh process after the same imports, as init runs, each into a folder or file just removed).

    .venv/bin/python benchmarks/inherit_memory.py [--work_dir benchmarks/.cache/inherit_memory]
    .venv/bin/python benchmarks/inherit_memory.py --reference open_llama_3b --n_layers 13  # the 1.5B job's true
        # shape: a 6.9 GB bfloat16 reference (random weights, built as full_size.py builds it), a 3.6 GB target
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Imports load large shared libraries whose transient peak would hide ours: reset the kernel's peak-RSS mark
# (VmHWM, via /proc/self/clear_refs) after importing, then read it back after the work.
MEASURE = r"""
import json, sys, time
from pathlib import Path
import psutil, torch
from litgpt_inheritune.init import main as init

def vm_hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
baseline = psutil.Process().memory_info().rss
start = time.perf_counter()
if sys.argv[1] == "init":
    init(Path(sys.argv[2]), out_dir=Path(sys.argv[3]), n_layers=int(sys.argv[4]), overwrite=True)
elif sys.argv[1] == "copy":  # the kept number of bytes, read and written in 16 MB pieces
    with open(sys.argv[2], "rb") as src, open(sys.argv[3], "wb") as dst:
        remaining = int(sys.argv[4])
        while remaining:
            chunk = src.read(min(remaining, 16 * 2**20))
            dst.write(chunk)
            remaining -= len(chunk)
else:
    state_dict = torch.load(Path(sys.argv[2]) / "lit_model.pth", weights_only=True)
seconds = time.perf_counter() - start
print(json.dumps({"baseline_rss": baseline, "peak_rss": vm_hwm(), "seconds": seconds}))
"""


def make_reference(reference_dir: Path) -> None:
    import torch
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.utils import save_config

    sys.path.append(str(Path(__file__).resolve().parents[1]))  # materials.py: demo and test material
    from materials import LLAMA_BLOCK

    config = Config(
        **LLAMA_BLOCK,
        name="synthetic-24L",
        block_size=2048,
        vocab_size=32000,
        padding_multiple=64,
        n_layer=24,
        n_embd=1024,
        n_head=16,
        intermediate_size=2048,
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in GPT(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state_dict = {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in shapes.items()}
    reference_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, reference_dir / "lit_model.pth")
    save_config(config, reference_dir)


def run(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/.cache/inherit_memory"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--reference",
        default="synthetic-24L",
        help="the reference's shape: synthetic-24L (float32, 1.27 GB) or a litgpt config name (bfloat16)",
    )
    parser.add_argument("--n_layers", type=int, default=4, help="blocks to keep")
    args = parser.parse_args()
    from litgpt.config import name_to_config

    if args.reference != "synthetic-24L" and args.reference not in name_to_config:
        parser.error(f"--reference {args.reference}: not synthetic-24L or a litgpt config name (e.g. open_llama_3b)")
    reference_dir = args.work_dir / args.reference / "reference"
    target_dir = args.work_dir / args.reference / "target"
    if not (reference_dir / "lit_model.pth").is_file():
        print(f"building the synthetic reference in {reference_dir} ...", file=sys.stderr)
        if args.reference == "synthetic-24L":
            make_reference(reference_dir)
        else:
            from full_size import MAKE_REFERENCE  # this folder is on sys.path: the 1.5B job's reference, as built there

            reference_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-c", MAKE_REFERENCE, reference_dir, args.reference], check=True)
    reference_bytes = (reference_dir / "lit_model.pth").stat().st_size
    with open(reference_dir / "lit_model.pth", "rb") as f:  # warm the page cache
        while f.read(16 * 2**20):
            pass

    # The copy runs as init does: in a fresh process after the same imports, its previous output removed first.
    # Writing into page-cache memory the system has not just freed costs several times more on a virtual machine
    # (430 MB: 0.2 s into memory just freed, 0.4-2 s otherwise; the imports take the memory freed last), so a copy
    # that reuses its own truncated file in a warm process is not a fair yardstick. The median of a few runs of
    # each, taken in turn, the order alternating.
    runs, copies = [], []
    copy_path = args.work_dir / args.reference / "copy.bin"
    for repeat in range(args.repeats):
        for which in ("init", "copy") if repeat % 2 == 0 else ("copy", "init"):
            if which == "init":
                shutil.rmtree(target_dir, ignore_errors=True)
                runs.append(run("init", str(reference_dir), str(target_dir), str(args.n_layers)))
                target_bytes = (target_dir / "lit_model.pth").stat().st_size
            else:
                copy_path.unlink(missing_ok=True)
                copies.append(run("copy", str(reference_dir / "lit_model.pth"), str(copy_path), str(target_bytes)))
    inherited = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    full_load = run("load", str(reference_dir))
    copy = sorted(c["seconds"] for c in copies)[len(copies) // 2]
    copy_path.unlink()

    def ratio(measured: dict) -> float:
        return round((measured["peak_rss"] - measured["baseline_rss"]) / target_bytes, 3)

    report = {
        "reference": args.reference,
        "n_layers": args.n_layers,
        "reference_bytes": reference_bytes,
        "target_bytes": target_bytes,
        "init_peak_over_target": max(ratio(r) for r in runs),
        "torch_load_peak_over_target": ratio(full_load),
        "init_seconds": round(inherited["seconds"], 3),
        "copy_kept_bytes_seconds": round(copy, 3),
        "init_time_over_copy": round(inherited["seconds"] / copy, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
