"""The training loop every stage that learns reuses, where it runs (device, torchrun) and checkpoints."""
