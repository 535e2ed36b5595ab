"""Hypothesis fuzz of the CLI config: random `--set KEY=VALUE` through `tfrollout config check`.

Every invocation must end as either a resolved config (exit 0, JSON that rebuilds the
same config) or one `error:` line with the config exit code — never a traceback or an
`internal error`. Counted so the ≥1,000 promise is checked, not assumed.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DeployConfig, build_config
from pipeline.errors import ConfigError

RUNS = {"cli": 0, "accepted": 0, "refused": 0}
SECTIONS = {name: sorted(field.annotation.model_fields)  # type: ignore[union-attr]
            for name, field in DeployConfig.model_fields.items()}
REAL_KEYS = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys]

_weird_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_numbers = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "NaN", "1e22", "1e-400", "0", "-1", "0x10", "1_000", "+5", ".5"]),
)
_structured = st.sampled_from([
    "[]", "[1, 2]", '["a", "b"]', "{}", '{"a": 1}', "true", "false", "null", "none", "", " ", "\"\"",
    "[[[[[[[[[[]]]]]]]]]]", '"unterminated', "'single'", "=", "==", "a=b", "--flag", "\x00", "\n", "é" * 50,
    "s3://bucket/prefix", "file:///tmp/x", "http://user:pass@127.0.0.1:9000", "../../etc/passwd", "/dev/null",
])
_values = st.one_of(_numbers, _structured, _weird_text)
_keys = st.one_of(
    st.sampled_from(REAL_KEYS),
    st.sampled_from(list(SECTIONS)),  # a section without a key
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(list(SECTIONS)), _weird_text),
    _weird_text,
    st.sampled_from(["", ".", "..", "a..b", "verify.target", "rollout.", ".rollout", "x.y.z", "rollout.host.extra"]),
)


def _check(assignments: list[str]) -> None:
    args = ["config", "check", "--json"]
    for item in assignments:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    RUNS["cli"] += 1
    assert "Traceback" not in result.output and "internal error" not in result.stderr, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    if result.exit_code == 0:
        RUNS["accepted"] += 1
        resolved = json.loads(result.stdout)["config"]
        if "***" not in json.dumps(resolved):  # redacted secrets cannot round-trip
            rebuilt = build_config(resolved).model_dump(mode="json")
            assert rebuilt == resolved, args  # what check prints is exactly what would run
    else:
        RUNS["refused"] += 1
        assert result.exit_code == ConfigError.exit_code, (args, result.exit_code, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines and lines[0].startswith("error: ") and json.loads(result.stdout)["ok"] is False, args


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.builds(lambda k, v: f"{k}={v}", _keys, _values), min_size=1, max_size=4))
def test_random_set_assignments_never_crash(assignments: list[str]):
    _check(assignments)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL_KEYS), _values)
def test_every_real_key_with_random_values(key: str, value: str):
    _check([f"{key}={value}"])


@settings(max_examples=100, deadline=None)
@given(_weird_text)
def test_assignments_without_equals_sign(raw: str):
    _check([raw.replace("=", "")])


def test_fuzz_ran_at_least_a_thousand_cli_invocations():
    """Runs last in this module (pytest keeps file order): the three fuzzers above really ran."""
    print(f"\nconfig fuzz: {RUNS}")
    assert RUNS["cli"] >= 1000, RUNS
    assert RUNS["accepted"] > 50 and RUNS["refused"] > 50, RUNS
