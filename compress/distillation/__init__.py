"""Knowledge distillation: the losses and the teacher's precomputed soft targets."""
