"""Test-only fault injection for the distributed tests, kept out of the production training loop.

On PYTHONPATH of the child processes (torchrun and its ranks), Python imports this file at start-up.
With $HQGNN_TEST_KILL_RANK set it wraps ``Trainer.__init__`` so that every Trainer gets an
``on_epoch_end`` hook: after epoch $HQGNN_TEST_KILL_EPOCH - 1 (its checkpoint is written by then),
the named rank dies (os._exit(1)) or, with HQGNN_TEST_KILL_MODE=hang, stalls.
"""

from __future__ import annotations

import os

if os.environ.get("HQGNN_TEST_KILL_RANK") is not None:
    import sys
    import time

    def _strike(epoch: int) -> None:
        import torch.distributed as dist

        from hqgnn.device import is_active, rank

        if not is_active() or int(os.environ.get("HQGNN_TEST_KILL_EPOCH", "1")) != epoch:
            return
        dist.barrier()  # all ranks: rank 0 has written the previous epoch's checkpoint before the victim goes
        if int(os.environ["HQGNN_TEST_KILL_RANK"]) != rank():
            return
        mode = os.environ.get("HQGNN_TEST_KILL_MODE", "exit")
        print(f"hqgnn: test fault injection: rank {rank()} {'hangs' if mode == 'hang' else 'exits'} at epoch {epoch}",
              file=sys.stderr, flush=True)
        if mode == "hang":
            while True:
                time.sleep(3600)
        os._exit(1)

    def _install() -> None:
        from hqgnn.train import trainer

        original = trainer.Trainer.__init__

        def __init__(self, *args, **kwargs):  # noqa: N807
            original(self, *args, **kwargs)
            chained = self.on_epoch_end

            def on_epoch_end(epoch: int) -> None:
                if chained is not None:
                    chained(epoch)
                _strike(epoch + 1)  # the start of the next epoch

            self.on_epoch_end = on_epoch_end

        trainer.Trainer.__init__ = __init__

    try:
        _install()
    except ImportError:  # a process without hqgnn on its path (e.g. a helper): nothing to inject
        pass
