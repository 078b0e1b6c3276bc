"""Stopping a run on a cluster's warning signal: finish the optimizer step, checkpoint, exit with a known code.

Slurm (``--signal``), Kubernetes and torch elastic send SIGTERM or SIGUSR1 some time before they kill a
job. The handler here only notes that the signal came (``train.signals``); the training loop asks
:meth:`StopSignals.agreed` after an optimizer step, so a signal never interrupts a step, a write or a
collective half-way. Under several processes every rank must stop after the same step, so they agree
with one all-reduce of a flag every :data:`CHECK_EVERY` optimizer steps in the first epoch, then every
:data:`CHECK_S` seconds' worth of steps (and at every epoch's end), not after every step: the flag is a
CPU tensor reduced over a gloo group, so the check never waits for the GPU, and a signal waits about
:data:`CHECK_S` seconds at most, which fits torch elastic's 30 s between forwarding it and killing.
The run then writes the exact mid-epoch checkpoint that ``checkpoint_every_steps`` writes and exits with
:data:`~cnnforge.errors.EXIT_PREEMPTED`; running the same command again with ``--run-dir`` (or ``cnnforge
resume``) continues bit-exactly. SIGINT (Ctrl-C) keeps its meaning: stop at once.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

#: optimizer steps between the ranks' agreements on a received signal in the first epoch (one small CPU
#: all-reduce each time); from then on as many steps as take about CHECK_S seconds, at most MAX_EVERY
CHECK_EVERY = 10
CHECK_S = 2.0
MAX_EVERY = 1000


class Preempted(Exception):
    """Raised by the training loop once the checkpoint after a stop signal is written."""

    def __init__(self, signal_name: str, checkpoint: Any) -> None:
        super().__init__(signal_name)
        self.signal_name, self.checkpoint = signal_name, checkpoint


class StopSignals:
    """The stop signals of one run: handlers that record a signal, and the ranks' agreement on it."""

    def __init__(self, names: Sequence[str], acc: Any) -> None:
        self.signals = [signal.Signals[f"SIG{name}"] for name in names]
        self.received: str | None = None
        self.world = acc.num_processes
        self.group: Any = None
        if self.world > 1:
            import torch.distributed as dist

            # a CPU flag needs a CPU backend: the default group already is one without CUDA (gloo); under NCCL a
            # gloo group of the same ranks carries it, so agreeing never touches the GPU stream
            if dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo")
        self.every = CHECK_EVERY
        self._flag = torch.zeros(2, dtype=torch.int64)  # (a signal came, -steps until the next agreement)
        self._value = self._flag.numpy()  # a view: reading it after the reduce is a plain memory read

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle the signals while training; the previous handlers come back afterwards unless one came.

        Only the main thread can handle signals (a Ray Tune trial runs in another thread: Ray stops it)."""
        if not self.signals or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._note) for sig in self.signals}
        try:
            yield self
        finally:
            if self.received is None:  # after a stop the handlers stay: a repeated warning must not cut the exit
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def due(self, global_step: int) -> bool:
        """Whether the ranks compare notes after this optimizer step: every step alone, every ``every`` together."""
        return self.world == 1 or global_step % self.every == 0

    def agreed(self, step_s: float | None = None) -> bool:
        """Whether any rank received a stop signal; a collective under several processes, called by every rank.

        ``step_s`` (at an epoch's end: this rank's seconds per optimizer step) sets the steps until the next
        agreement to about :data:`CHECK_S` seconds' worth; the ranks take the smallest proposal.
        """
        if self.world == 1:
            return self.received is not None
        import torch.distributed as dist

        every = self.every if step_s is None else max(1, min(MAX_EVERY, int(CHECK_S / max(step_s, 1e-9))))
        self._flag[0], self._flag[1] = int(self.received is not None), -every
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self.group)
        self.every = -int(self._value[1])
        return bool(self._value[0])
