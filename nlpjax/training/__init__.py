"""The shared trainer: state, optimizers, steps, loop, checkpoints, metrics."""
