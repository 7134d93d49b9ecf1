"""``python -m maml_rl.launcher ARGS``: ``torch.distributed.run`` (the elastic launcher) for ``--nproc R``, with
a stop that reads like one process's.

On SIGTERM or SIGINT the launcher passes the signal to the workers, waits for them (rank 0 checkpoints the last
completed iteration and says so), and then raises ``SignalException`` out of its ``main``, which Python prints as
a traceback after the workers' one-line message. Here that exception ends the launcher with status 130, the
status of an interrupted single-process run, and no traceback. Every other outcome is the launcher's own.
"""

from __future__ import annotations

import sys

#: exit status of an interrupted run (``maml-rl train`` returns it after Ctrl-C or SIGTERM)
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the elastic launcher on ``argv``; 130 when it was stopped by a signal."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as launch

    try:
        launch(argv)
    except SignalException:
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
