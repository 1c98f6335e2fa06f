"""The data stage: Ray Data sources, per-task preprocessing, collation."""
