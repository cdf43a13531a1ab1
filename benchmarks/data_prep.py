"""Speed and memory of the data preparation (`RedPajama.prepare_data`: litdata.optimize over file parts).

Real text: the Lee news corpus (gensim's test data, 300 articles) written as RedPajama-style jsonl, copied to make a
corpus of `--copies` files ("1x") and one ten times larger ("10x"), tokenized with SmolLM2-135M's tokenizer, all
of it (the budget exceeds the data). Reports, each preparation in a fresh process:
- tokens/s on the 10x corpus with 1 worker and with every core (goal on 2 cores: >= 1.7x the 1-worker speed);
- peak RSS of the preparing process (above its post-import baseline) and of its largest worker, on the 1x and the
  10x corpus (goal: growth from 1x to 10x under 50 MB).

    .venv/bin/python benchmarks/data_prep.py [--work_dir benchmarks/.cache/data_prep] [--copies 10]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
from litgpt.tokenizer import Tokenizer
from litgpt_inheritune.redpajama import RedPajama

def vm_hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

corpus, tokenizer_dir, cache_dir, workers = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
data = RedPajama(data_dir=corpus, cache_dir=cache_dir, token_budget=10**12, val_tokens=10_000, prepare_workers=workers)
data.connect(Tokenizer(tokenizer_dir), max_seq_length=2048)
data.prepared_dir  # lists the files (part of the work, but not of the tokenization)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark after the imports
baseline = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
start, cpu_start = time.perf_counter(), time.process_time()
data.prepare_data()
seconds = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN)
manifest = data.manifest()
print(json.dumps({
    "tokens": manifest["train"]["tokens"] + manifest["val"]["tokens"], "documents": manifest["train"]["documents"] + manifest["val"]["documents"],
    "seconds": seconds, "baseline_rss": baseline, "peak_rss": vm_hwm(),
    "worker_peak_rss": children.ru_maxrss * 1024, "cpu_seconds": children.ru_utime + children.ru_stime + time.process_time() - cpu_start,
}))
"""


def write_corpus(articles: list[str], folder: Path, n_files: int) -> Path:
    if folder.is_dir() and len(list(folder.glob("*.jsonl"))) == n_files:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    lines = "".join(json.dumps({"text": article, "meta": {"source": "lee_background"}}) + "\n" for article in articles)
    for k in range(n_files):
        (folder / f"lee-{k:04d}.jsonl").write_text(lines)
    return folder


def measure(corpus: Path, tokenizer_dir: Path, cache_dir: Path, workers: int) -> dict:
    shutil.rmtree(cache_dir, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(corpus), str(tokenizer_dir), str(cache_dir), str(workers)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", type=Path, default=Path("benchmarks/.cache/data_prep"))
    parser.add_argument("--copies", type=int, default=10, help="files in the 1x corpus (each the whole Lee corpus)")
    parser.add_argument("--materials", type=Path, default=Path(".cache/materials"))
    args = parser.parse_args()

    sys.path.append(
        str(Path(__file__).resolve().parents[1])
    )  # materials.py: demo and test material, not in the package
    from materials import lee_corpus, smollm2_checkpoint

    tokenizer_dir = smollm2_checkpoint(args.materials)
    articles = [
        line.strip() for line in lee_corpus(args.materials).read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    small = write_corpus(articles, args.work_dir / "corpus-1x", args.copies)
    large = write_corpus(articles, args.work_dir / "corpus-10x", 10 * args.copies)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    runs = {
        "10x, 1 worker": measure(large, tokenizer_dir, args.work_dir / "cache", 1),
        f"10x, {cores} workers": measure(large, tokenizer_dir, args.work_dir / "cache", cores),
        f"1x, {cores} workers": measure(small, tokenizer_dir, args.work_dir / "cache", cores),
    }
    mib = 2**20
    for name, run in runs.items():
        print(
            f"{name}: {run['tokens']:,} tokens, {run['documents']:,} documents in {run['seconds']:.1f} s = {run['tokens'] / run['seconds']:,.0f} tokens/s;"
            f" peak RSS {(run['peak_rss'] - run['baseline_rss']) / mib:.1f} MiB above the baseline"
            f" ({run['peak_rss'] / mib:.0f} MiB), largest worker {run['worker_peak_rss'] / mib:.0f} MiB;"
            f" {run['cpu_seconds']:.1f} CPU-seconds ({run['cpu_seconds'] / run['seconds']:.2f} cores busy on average)"
        )
    print(
        f"load average before and after: {load_before} / {os.getloadavg()} (other work on the machine slows the workers)"
    )
    one, many, small_run = runs["10x, 1 worker"], runs[f"10x, {cores} workers"], runs[f"1x, {cores} workers"]
    speedup = (many["tokens"] / many["seconds"]) / (one["tokens"] / one["seconds"])
    growth = max(many["peak_rss"] - small_run["peak_rss"], many["worker_peak_rss"] - small_run["worker_peak_rss"]) / mib
    print(
        f"speed-up with {cores} workers: {speedup:.2f}x (goal on 2 cores: >= 1.7); tokens per CPU-second:"
        f" {one['tokens'] / one['cpu_seconds']:,.0f} with 1 worker, {many['tokens'] / many['cpu_seconds']:,.0f} with {cores}"
    )
    print(f"peak RSS growth from 1x to 10x: {growth:.1f} MiB (goal: < 50)")
    rate_per_core = one["tokens"] / one["seconds"]
    print(f"1B tokens on 16 such cores at this per-core speed: {1e9 / (16 * rate_per_core) / 60:.1f} min")


if __name__ == "__main__":
    main()
