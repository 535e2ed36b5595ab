"""Typed deploy configuration: one TOML file, overridden by environment and flags.

Precedence (lowest to highest): defaults < TOML file < `TFROLLOUT_<SECTION>__<KEY>`
environment variables < `--set section.key=value` flags. Every layer is merged as
plain dicts first and validated once, so an error always names the dotted key.

The sections live by topic beside this loader (`training`, `publish`, `rollout`); every
name is importable from `pipeline.config` itself.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, PrivateAttr, ValidationError

from pipeline.config.base import _Section
from pipeline.config.publish import ExportConfig, GateConfig, StorageConfig
from pipeline.config.rollout import RolloutConfig, VerifyConfig
from pipeline.config.training import AugmentConfig, DataConfig, ModelConfig, TransferConfig
from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_FILE", "ENV_NESTING", "ENV_PREFIX", "RENAMED_KEYS",
    "AugmentConfig", "DataConfig", "DeployConfig", "ExportConfig", "GateConfig", "ModelConfig",
    "RolloutConfig", "RunConfig", "StorageConfig", "TransferConfig", "VerifyConfig",
    "apply_renames", "build_config", "deep_merge", "env_overrides", "flag_overrides",
    "format_validation_error", "known_keys", "load_config", "parse_scalar", "read_toml",
    "unknown_key_hint",
]

ENV_PREFIX = "TFROLLOUT_"
ENV_NESTING = "__"
DEFAULT_CONFIG_FILE = Path("deploy.toml")
# Old key -> new key. An old key still works for one release, with a warning.
RENAMED_KEYS: dict[str, str] = {"verify.target": "verify.endpoint"}


class RunConfig(_Section):
    """Where the run record and intermediate artefacts live."""

    workdir: Path = Path(".tfrollout")


class DeployConfig(_Section):
    """The whole configuration, one section per concern."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    transfer: TransferConfig = TransferConfig()
    export: ExportConfig = ExportConfig()
    storage: StorageConfig = StorageConfig()
    gate: GateConfig = GateConfig()
    verify: VerifyConfig = VerifyConfig()
    rollout: RolloutConfig = RolloutConfig()
    run: RunConfig = RunConfig()
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Deprecated keys that were accepted (the CLI prints these once per command)."""
        return self._warnings


# --------------------------------------------------------------------------- merging


def parse_scalar(text: str) -> Any:
    """Read an override value as TOML (numbers, booleans, arrays), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"config override {dotted!r}: empty key")
    node = target
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TFROLLOUT_EXPORT__MODEL_NAME=x` -> {"export": {"model_name": "x"}}."""
    merged: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name:
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTING, ".")
        _set_dotted(merged, dotted, parse_scalar(raw))
    return merged


def flag_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """`["transfer.head_epochs=5"]` -> {"transfer": {"head_epochs": 5}}."""
    merged: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. transfer.head_epochs=50")
        _set_dotted(merged, key.strip(), parse_scalar(raw.strip()))
    return merged


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; values in `override` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def known_keys(path: tuple[Any, ...]) -> list[str]:
    """The keys the section at `path` (e.g. ("transfer",)) accepts; [] when it is no section."""
    model: Any = DeployConfig
    for name in path:
        field = model.model_fields.get(str(name)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """`unknown key (did you mean transfer.head_epochs?)` for a misspelt key."""
    import difflib

    *parent, name = loc
    close = difflib.get_close_matches(str(name), known_keys(tuple(parent)), n=1, cutoff=0.6)
    where = ".".join(str(p) for p in parent)
    if close:
        return f"unknown key (did you mean {'.'.join([*map(str, parent), close[0]])}?)"
    known = known_keys(tuple(parent))
    return f"unknown key ({where or 'top level'} accepts: {', '.join(known)})" if known else "unknown key"


def format_validation_error(err: ValidationError) -> str:
    """One line per bad key: `transfer.head_epochs: Input should be ... (got -1)`."""
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"{key}: {unknown_key_hint(tuple(item['loc']))}")
            continue
        got = item.get("input")
        suffix = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        parts.append(f"{key}: {item['msg']}{suffix}")
    return "; ".join(parts)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file, reporting the file and the parser's reason on failure."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def apply_renames(merged: dict[str, Any]) -> list[str]:
    """Move values of renamed keys to their new names in place; one warning line per old key used."""
    warnings = []
    for old, new in RENAMED_KEYS.items():
        old_section, old_key = old.split(".")
        new_section, new_key = new.split(".")
        section = merged.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        target = merged.setdefault(new_section, {})
        if isinstance(target, dict) and new_key in target:
            raise ConfigError(f"{old} is the old name of {new}; set only {new}")
        value = section.pop(old_key)
        if isinstance(target, dict):
            target[new_key] = value
        warnings.append(f"config key {old} is deprecated and will be removed in the next release; "
                        f"use {new}")
    return warnings


def build_config(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    assignments: Iterable[str] = (),
) -> DeployConfig:
    """Merge the layers and validate once (pure: no file or process access)."""
    merged = deep_merge({}, file_data or {})
    merged = deep_merge(merged, env_overrides(environ or {}))
    merged = deep_merge(merged, flag_overrides(assignments))
    warnings = apply_renames(merged)
    try:
        config = DeployConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None
    config.warnings.extend(warnings)
    return config


def load_config(path: Path | None = None, assignments: Iterable[str] = ()) -> DeployConfig:
    """Load `path` (or ./deploy.toml when present), then apply env and flag overrides."""
    if path is None:
        file_data = read_toml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.is_file() else {}
    else:
        file_data = read_toml(path)
    return build_config(file_data, os.environ, assignments)
