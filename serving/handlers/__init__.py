"""One handler class per task, named by `TaskSpec.handler` in the task registry.

Each module holds one task's handler; `base` holds what they share. The `Parameters` and `Input`
models live in `serving.schemas`, which imports no model stack, so the HTTP ingress can read them. Import a handler through the registry (`get_task(name).load_handler()`) or
`serving.build_handler(loaded)`, so that adding a task never edits this package's imports.
"""
