"""Progress of a headless run: a live tqdm bar on a terminal, sparse lines in a log.

Fed by the trainer node's run events (``nodes.trainer.RUN_EVENTS``): ``start``, ``update``
(the step's log record), ``save``. Shows step / total, loss, lr, seconds per step and the
time left; in a log (not a terminal) one line per 10% of the run or per minute, whichever
comes first, and the last step.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, label: str, stream=None, tty: bool | None = None, every_s: float = 60.0):
        self.label = label
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.bar = None
        self.started = self.last_line = 0.0
        self.first = self.total = self.last_step = 0
        self.last_save: dict | None = None  # the last save event (reason, step, text)

    def __call__(self, event: str, data: dict) -> None:
        getattr(self, f"on_{event}")(data)

    def on_start(self, data: dict) -> None:
        self.first, self.total = data["step"], data["total"]
        self.started = self.last_line = time.monotonic()
        self.last_step = self.first
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.first, desc=self.label, unit="step", file=self.stream, dynamic_ncols=True)
        else:
            self.write(f"{self.label}: training steps {self.first + 1}-{self.total}")

    def on_update(self, record: dict) -> None:
        step = record["step"]
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
            return
        now = time.monotonic()
        done = step - self.first
        per_step = (now - self.started) / max(done, 1)
        tenth = max(1, (self.total - self.first) // 10)
        if step == self.total or (step - self.first) % tenth == 0 or now - self.last_line >= self.every_s:
            self.last_line = now
            self.write(f"{self.label}: step {step}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                       f"{per_step:.3f} s/step  ETA {_clock(per_step * (self.total - step))}")

    def on_save(self, data: dict) -> None:
        self.last_save = data
        self.write(f"{self.label}: {data['text']}")

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
