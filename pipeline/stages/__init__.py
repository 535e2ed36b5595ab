"""Pipeline stages: each module exposes `run(ctx: StageContext) -> dict` (see pipeline.run)."""
