"""Preemption: SIGTERM, SIGINT and SIGUSR1 become "finish this step, write a checkpoint, exit with status 75".

Schedulers preempt with a signal and a grace period: SLURM sends SIGTERM when it
cancels, requeues or preempts a job (and SIGUSR1 ahead of the time limit with
``--signal=USR1@120``), cloud VMs and Kubernetes send SIGTERM, a terminal's
Ctrl-C sends SIGINT. While the training loop runs, :class:`StopSignals` only
notes such a signal; the loop reads the note once per optimizer step, agrees on
it with every other process (one all-reduce, shared with the step's finiteness
check, :func:`nlpssl.steps.check_step`), writes a checkpoint of that step and
raises :class:`Preempted`: a ``SystemExit`` whose status,
:data:`PREEMPTED_EXIT_STATUS`, tells a scheduler's wrapper "checkpoint written,
run again with ``--train.resume=auto``".

A repeated signal changes nothing (a launcher often forwards the signal its
workers were also sent directly); SIGKILL is the way to stop at once.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

#: Exit status of a run stopped by a signal after writing its checkpoint: EX_TEMPFAIL of sysexits.h, "try
#: again later". Not 143 (128 + SIGTERM): a shell reports that for a process SIGTERM killed before it could save.
PREEMPTED_EXIT_STATUS = 75

#: The signals that stop a run at the next optimizer step (SIGUSR1: what SLURM's ``--signal`` sends by convention)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


class Preempted(SystemExit):
    """The run stopped on a signal after writing a checkpoint of ``step``; unhandled, the interpreter exits with status 75.

    A ``SystemExit``: ``except Exception`` does not swallow it, ``finally`` blocks run,
    no traceback is printed, and a script ends here (its final evaluation would be
    redone by the resumed run anyway).
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(PREEMPTED_EXIT_STATUS)
        self.signal_name, self.step, self.checkpoint = signal_name, step, Path(checkpoint)


class StopSignals:
    """A context in which SIGTERM, SIGINT and SIGUSR1 are noted (:attr:`received`) instead of ending the process.

    The previous handlers come back on exit. Outside the main thread (where Python
    cannot install handlers) it notes nothing and signals keep their usual effect.

    Example::

        with StopSignals() as signals:
            while training:
                ...
                if signals.received:    # "SIGTERM"
                    save_and_stop()
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: str | None = None  # the name of the first signal received
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)  # None: installed outside Python
        self._previous.clear()

    def _note(self, signum: int, frame) -> None:
        # Only a note: the handler runs between two bytecodes of whatever the loop is doing (a checkpoint write too).
        if self.received is None:
            self.received = signal.Signals(signum).name
