"""pretrain's progress display: a bar on a terminal, log lines in a batch job's log."""

import sys
import time
from datetime import timedelta
from typing import Optional

import lightning as L
from tqdm import tqdm


class Progress:
    """A tqdm bar with loss, lr, tokens/s and ETA on rank 0 when stderr is a terminal; plain log lines otherwise."""

    def __init__(self, fabric: L.Fabric, total: int, initial: int) -> None:
        self.enabled = fabric.global_rank == 0
        self.total, self.start, self.t0 = total, initial, time.perf_counter()
        self.bar = (
            tqdm(total=total, initial=initial, desc="pretrain", unit="step", file=sys.stderr, dynamic_ncols=True)
            if self.enabled and sys.stderr.isatty()
            else None
        )

    def update(self, step: int, loss: float, lr: float, tokens_per_sec: float, mfu: Optional[float]) -> None:
        if not self.enabled:
            return
        extra = f", MFU {mfu:.1%}" if mfu is not None else ""
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}, lr {lr:.2e}, {tokens_per_sec:,.0f} tok/s{extra}", refresh=False)
            self.bar.update(step - self.bar.n)
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(1, step - self.start) * (self.total - step)
        print(
            f"step {step}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_sec:,.0f} tok/s{extra}"
            f" | elapsed {timedelta(seconds=int(elapsed))} | ETA {timedelta(seconds=int(eta))}",
            flush=True,
        )

    def write(self, line: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
