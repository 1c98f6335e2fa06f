"""The training stage: model building (the one full/LoRA switch), the Ray Train loop, evaluation and checkpoints."""
