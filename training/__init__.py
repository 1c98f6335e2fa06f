"""The training stage: model building (the full/LoRA switch), metrics; the Ray Train loop comes next."""
