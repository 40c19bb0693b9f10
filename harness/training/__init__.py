"""Training of one run, split by concern.

- :mod:`~harness.training.trainer`: :class:`Trainer` (owns model, optimiser,
  scheduler, step, RNG and log of one run) and :func:`train_run`, the entry
  ``python -m harness train`` calls;
- :mod:`~harness.training.setup`: the run's model (built within memory), schedule and
  mixed precision;
- :mod:`~harness.training.lock`: one trainer per run output (``<out>.lock``);
- :mod:`~harness.training.distributed`: the process layout under torchrun and
  the collectives;
- :mod:`~harness.training.data_order`: which items each step sees (epoch
  permutations, step batches);
- :mod:`~harness.training.rng`: seeding, saving and restoring RNG streams;
- :mod:`~harness.training.resume`: partial checkpoints, resume, init weights,
  whether an existing output already is the complete run, and where two
  checkpoints' training states differ;
- :mod:`~harness.training.runlog`: the CSV log and the progress display;
- :mod:`~harness.training.preemption`: SIGTERM (a job's time limit) saves the
  state at a step boundary and stops the run (exit status 75).

The device rule is :func:`harness.device.resolve_device`; the weight fit check
is :func:`harness.checkpoint.load_weights`.
"""
__all__ = ["Trainer", "train_run"]


def __getattr__(name: str):
    # Imported on first use: the trainer imports torch, and some parts of the
    # package (preemption) are used before that (python -m harness train).
    if name in __all__:
        from harness.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
