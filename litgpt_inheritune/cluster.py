"""Surviving a shared cluster: preemption signals, one run per out_dir, failures on one rank.

- SIGTERM and SIGUSR1 (what SLURM sends with ``--signal``) are noted, never acted on mid-step; every rank learns at
  the same optimizer step that one of them was told to stop (an all-reduce of the flag), so all ranks write the same
  step checkpoint and exit with PREEMPTED_EXIT_CODE.
- A lock file in out_dir (``fcntl.flock``, released by the kernel when its holder dies) keeps a second run off a
  folder that a live run is writing.
- An error on one rank ends every rank with its message, instead of leaving the others waiting in a collective.
- The training data are prepared once, on rank 0 while the others wait (as long as it takes), and every rank reads
  the same number of batches per epoch, so that no rank waits in a collective that the others never reach.
"""

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from litgpt.data import DataModule

from litgpt_inheritune.errors import fail

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry". Schedulers can requeue on it.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
LOCK_FILE = ".inheritune.lock"
# Keys in torch.distributed's store (the rendezvous server every rank reaches): the first failure, how many ranks read it.
FAILURE_KEY, STOPPED_KEY = "inheritune/failure", "inheritune/stopped"
# Environment variables that name a process's rank under Fabric's launcher, torchrun and SLURM.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
_held_locks: dict[Path, tuple[int, bool]] = {}  # lock file -> (descriptor, whether locking created out_dir)


class StopRequest:
    """Notes a stop signal (and --train.max_time) in a training process; ``check()`` tells every rank the same."""

    def __init__(self, fabric, max_time: Optional[float]) -> None:
        self.fabric, self.max_time = fabric, max_time
        self.start = time.perf_counter()
        self.signal_number = 0
        self.previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # Python installs handlers only there
            for number in STOP_SIGNALS:
                self.previous[number] = signal.signal(number, self.note)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def note(self, number: int, frame) -> None:
        self.signal_number = number

    def check(self) -> Optional[str]:
        """None, "time" or the name of a stop signal ("SIGTERM"), agreed between ranks (one all-reduce)."""
        number = self.signal_number
        timed_out = int(self.max_time is not None and time.perf_counter() - self.start >= self.max_time)
        if self.fabric.world_size > 1:  # a signal may reach one rank only, and clocks differ: the ranks agree
            flags = self.fabric.all_reduce(
                torch.tensor([number, timed_out], device=self.fabric.device), reduce_op="max"
            )
            number, timed_out = (int(v) for v in flags.tolist())
        if number:
            return signal.Signals(number).name
        return "time" if timed_out else None


def preempted(fabric, reason: str, step: int, checkpoint: Optional[Path]) -> None:
    """Ends a rank after its preemption checkpoint. The process that was launched (local rank 0) exits with
    PREEMPTED_EXIT_CODE; processes that Fabric's launcher started exit 0, since its watcher kills every rank as soon
    as one of its children exits with another code."""
    if fabric.global_rank == 0:
        saved = f"saved {checkpoint}" if checkpoint else "no step to save yet"
        print(
            f"Stopped by {reason} at step {step}; {saved}. To continue, run the same command with --resume auto"
            f" (exit code {PREEMPTED_EXIT_CODE}: preempted, resumable)",
            file=sys.stderr,
            flush=True,
        )
    raise SystemExit(PREEMPTED_EXIT_CODE if fabric.local_rank == 0 else 0)


def run_forwarding_stop_signals(command: list[str]) -> tuple[int, Optional[str]]:
    """Runs ``command``, passing SIGTERM and SIGUSR1 on to it (so it saves and stops); returns its exit code and the
    name of the stop signal received, if any."""
    process = subprocess.Popen(command)
    received: list[int] = []

    def forward(number: int, frame) -> None:
        received.append(number)
        process.send_signal(number)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python installs handlers only there
        previous = {number: signal.signal(number, forward) for number in STOP_SIGNALS}
    try:
        code = process.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return code, (signal.Signals(received[0]).name if received else None)


def launched_as_rank_zero() -> bool:
    """True in the process that a user or scheduler started as global rank 0 (not in the ranks it launches)."""
    return all(os.environ.get(name, "0") in ("0", "") for name in RANK_VARIABLES)


def lock_out_dir(out_dir: Path) -> None:
    """Takes the lock of ``out_dir`` for this process until ``unlock_out_dir`` or its exit. Refuses, naming the
    holder's host and PID, while another live process holds it; a lock file left by a dead process does not count,
    since the kernel drops a lock with the process that held it."""
    path = (out_dir / LOCK_FILE).resolve()
    if path in _held_locks:
        return
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file, a path through a file, a broken link, no permission
        fail(f"--out_dir {out_dir} cannot be a folder ({error.strerror}); choose another --out_dir")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = (
            os.read(descriptor, 512).decode(errors="replace").strip() or "a process that has not yet written its name"
        )
        os.close(descriptor)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        fail(
            f"--out_dir {out_dir} is in use by another run ({holder}; lock file {path}); wait for it to end or choose another --out_dir"
        )
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"host {socket.gethostname()}, PID {os.getpid()}, since {started}\n".encode(), 0)
    _held_locks[path] = (descriptor, created)


def unlock_out_dir(out_dir: Path) -> None:
    """Releases the lock; an out_dir that the lock created and that holds nothing else (a run refused after
    locking) is removed, so a refused run leaves nothing behind."""
    path = (out_dir / LOCK_FILE).resolve()
    descriptor, created = _held_locks.pop(path, (None, False))
    if descriptor is None:
        return
    if created and [p.name for p in out_dir.iterdir()] == [LOCK_FILE]:
        path.unlink()
        out_dir.rmdir()
    os.close(descriptor)


def prepare_on_ranks(fabric: L.Fabric, data: DataModule) -> None:
    """Prepares the data once: on one rank, or on rank 0 while the others wait (as long as it takes) for it."""
    if fabric.world_size == 1 or not hasattr(data, "is_prepared"):
        with fabric.rank_zero_first():  # litgpt's modules: the others then find the files on a shared filesystem
            data.prepare_data()
        return
    if not all(fabric.all_gather(torch.tensor(int(data.is_prepared()), device=fabric.device)).tolist()):
        if fabric.global_rank == 0:
            print(
                f"Preparing the data on rank 0 while the other {fabric.world_size - 1} ranks wait; run `litgpt inheritune"
                " prepare_data` with the same flags before a multi-GPU launch to start training at once",
                file=sys.stderr,
            )
            data.prepare_data()
        else:
            print(
                f"rank {fabric.global_rank}: waiting for rank 0 to prepare the data in {data.prepared_dir}",
                file=sys.stderr,
            )
        # a barrier of its own without the default 30-minute timeout: tokenizing can take hours
        torch.distributed.barrier(group=torch.distributed.new_group(backend="gloo", timeout=timedelta(days=30)))
    seen = fabric.all_gather(torch.tensor(int(data.is_prepared()), device=fabric.device)).tolist()
    if not all(seen):
        ranks = ", ".join(str(rank) for rank, ok in enumerate(seen) if not ok)
        fail(
            f"ranks {ranks} do not see the prepared data in {data.prepared_dir}; put --data.cache_dir on a shared filesystem"
            " or run `litgpt inheritune prepare_data` with the same flags on every node (or copy the folder) first"
        )


def agreed_batches_per_epoch(fabric: L.Fabric, batches: int) -> int:
    """Training batches every rank reads per epoch: the fewest any rank holds. A rank with more drops its last ones
    each epoch; otherwise it would run more steps and wait at the end of an epoch in a gradient all-reduce that the
    others never join. (litdata's StreamingDataset already gives every rank the same count; other loaders may not.)"""
    counts = fabric.all_gather(torch.tensor(batches, device=fabric.device)).view(-1).tolist()
    if min(counts) != max(counts) and fabric.global_rank == 0:
        print(
            f"warning: the {fabric.world_size} ranks hold {min(counts):,} to {max(counts):,} training batches; each"
            f" reads {min(counts):,} per epoch, so that all run the same steps (the others' last batches are left out)",
            file=sys.stderr,
        )
    return min(counts)


@contextmanager
def one_failure_stops_every_rank(fabric):
    """In a run of several processes, an error on one rank ends every rank with its message, where the others would
    wait in their next collective (until torch.distributed's timeout). The failing rank posts its message in
    torch.distributed's store; a thread on every rank watches the store, prints "rank R stopped because rank K
    failed: MESSAGE" and ends its process. Every rank exits with code 1."""
    if fabric.world_size == 1:
        yield
        return
    store = torch.distributed.distributed_c10d._get_default_store()
    rank, world_size = fabric.global_rank, fabric.world_size
    done = threading.Event()
    watcher = threading.Thread(target=watch_for_failure, args=(store, rank, done), daemon=True, name="failure-watcher")
    watcher.start()
    try:
        yield
    except BaseException as error:
        if isinstance(error, SystemExit) and error.code in (None, 0, PREEMPTED_EXIT_CODE):
            raise  # a normal end or a preemption: every rank ends there together
        if isinstance(error, SystemExit) and isinstance(error.code, str):
            message = error.code  # fail(): already one line
        elif isinstance(error, SystemExit):
            message = f"exit code {error.code}"
        else:
            import traceback

            traceback.print_exc()
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        try:
            if store.add(FAILURE_KEY + "/count", 1) == 1:  # the first rank to fail names the failure
                store.set(FAILURE_KEY, f"{rank}\n{message}")
            else:
                stop_for_failure(store, rank)  # this error followed another rank's (e.g. a collective it broke)
            print(message, file=sys.stderr, flush=True)
            store.add(STOPPED_KEY, 1)
            waited = time.monotonic()
            # the store lives in rank 0's process: rank 0 stays until every rank has read the message
            while store.add(STOPPED_KEY, 0) < world_size and time.monotonic() - waited < 30:
                time.sleep(0.1)
        except Exception:  # the store is gone with its process: this rank's own message is all there is
            print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # not a normal exit: it could wait forever on work queued for ranks that are gone
    finally:
        # a normal end or a preemption: the watcher stops before the process group and its store are torn down (a
        # thread still inside a store call at interpreter exit aborts the process: "terminate called without an
        # active exception")
        done.set()
        watcher.join(timeout=10)


def watch_for_failure(store, rank: int, done: threading.Event) -> None:
    """Runs in a thread of every rank until ``done``: ends this process once another rank has posted a failure."""
    try:
        while not done.wait(0.5):
            if store.check([FAILURE_KEY]):
                stop_for_failure(store, rank)
                return
    except Exception:  # the store is gone (rank 0's process ended): the broken collective ends this rank
        return


def stop_for_failure(store, rank: int) -> None:
    """Ends this rank with the message another rank posted; returns if the failure is this rank's own."""
    failed_rank, message = store.get(FAILURE_KEY).decode().split("\n", 1)
    if int(failed_rank) == rank:
        return
    print(f"rank {rank} stopped because rank {failed_rank} failed: {message}", file=sys.stderr, flush=True)
    store.add(STOPPED_KEY, 1)
    sys.stdout.flush()
    os._exit(1)
