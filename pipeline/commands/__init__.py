"""The CLI's commands, one module per topic; `pipeline.cli.COMMANDS` mounts them.

deploy (the stages, config, demo) · store (push, storage) · runtime (rollout, rollback,
status, serve) · query (verify, predict, loadtest) · common (options, the error handler).
"""
