"""The base every config section shares, in a module of its own so the section modules and
the loader in `pipeline/config/__init__.py` share it without importing each other (no cycle)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
