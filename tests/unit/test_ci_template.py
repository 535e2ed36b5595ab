"""infra/ci/github-actions-deploy.yml, checked offline.

- It is a valid GitHub Actions workflow: YAML 1.2 (as GitHub reads it) and the workflow JSON
  schema that `check-jsonschema` ships (SchemaStore's, vendored: no network).
- Every `TFROLLOUT_*` variable and `--set KEY=VALUE` in it is a current config key: each job's
  settings go through the project's own config loader (a renamed key fails; a deprecated one
  would be accepted with a warning, which fails too).
- No runtime admin API (TF Serving's ModelService, on the gRPC port) is published beyond the
  serving host's loopback unless the runtime checks an admin token.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from pipeline.config import (
    ENV_NESTING,
    ENV_PREFIX,
    RENAMED_KEYS,
    DeployConfig,
    build_config,
    known_keys,
    read_toml,
)
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "ci" / "github-actions-deploy.yml"
# what `vars.*` / `secrets.*` hold in a real repository (the template's README names them)
SAMPLE_VARS = {"MODEL_STORE_URI": "s3://models-bucket/tfrollout", "SERVING_HOST": "serving.example.com",
               "S3_ENDPOINT_URL": "https://minio.example.com:9000", "DEPLOY_CONFIG": "deploy.toml",
               "AWS_REGION": "eu-west-1"}


def load_workflow() -> dict[str, Any]:
    yaml = YAML(typ="safe")  # YAML 1.2, as GitHub: `on` stays a string key, not True
    data = yaml.load(TEMPLATE.read_text())
    assert isinstance(data, dict)
    return data


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- expressions


def dispatch_defaults(workflow: dict[str, Any]) -> dict[str, str]:
    inputs = (workflow["on"].get("workflow_dispatch") or {}).get("inputs") or {}
    return {name: str(spec.get("default", "")) for name, spec in inputs.items()}


def evaluate(expression: str, defaults: dict[str, str]) -> str:
    """`a || b || 'c'` with inputs at `defaults` (none on a push) and vars/secrets at sample values."""
    for operand in (part.strip() for part in expression.split("||")):
        literal = re.fullmatch(r"'([^']*)'", operand)
        if literal:
            return literal.group(1)
        name = re.fullmatch(r"(?:github\.event\.)?inputs\.(\w+)", operand)
        if name and defaults.get(name.group(1)):
            return defaults[name.group(1)]
        name = re.fullmatch(r"(vars|secrets)\.(\w+)", operand)
        if name:
            return SAMPLE_VARS.get(name.group(2), f"sample-{name.group(2).lower()}")
        if operand.startswith(("github.", "runner.")):
            return "/home/runner/work/repo/repo"
    return ""


def substitute(text: str, defaults: dict[str, str], shell_env: dict[str, str] | None = None) -> str:
    text = re.sub(r"\$\{\{(.*?)\}\}", lambda m: evaluate(m.group(1), defaults), text)
    if shell_env is not None:
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: shell_env.get(m.group(1), m.group(0)), text)
    return text


def env_of(node: dict[str, Any], defaults: dict[str, str]) -> dict[str, str]:
    return {str(k): substitute(str(v), defaults) for k, v in (node.get("env") or {}).items()}


def job_settings(workflow: dict[str, Any], job: dict[str, Any], *, dispatched: bool = True,
                 ) -> tuple[dict[str, str], list[str], list[str]]:
    """(TFROLLOUT_* environment, --set assignments, tfrollout command lines) of one job, as a manual
    run with the inputs' defaults sets them (`dispatched`), else as a push (no inputs) does."""
    defaults = dispatch_defaults(workflow) if dispatched else {}
    env = {**env_of(workflow, defaults), **env_of(job, defaults)}
    tfr_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assignments: list[str] = []
    commands: list[str] = []
    for step in job.get("steps", []):
        step_env = {**env, **env_of(step, defaults)}
        tfr_env.update({k: v for k, v in step_env.items() if k.startswith(ENV_PREFIX)})
        script = substitute(str(step.get("run", "")), defaults, step_env)
        script = script.replace("\\\n", " ")
        # `echo "TFROLLOUT_X__Y=value" >> "$GITHUB_ENV"`: set for the steps after it
        for name, value in re.findall(r"\b(TFROLLOUT_\w+)=([^\"'\s]+)", script):
            tfr_env[name] = value
        for line in script.splitlines():
            if "tfrollout " not in line:
                continue
            commands.append(line)
            words = shlex.split(line.split(">")[0], comments=True)
            for i, word in enumerate(words):
                if word in ("--set", "-s") and i + 1 < len(words):
                    assignments.append(words[i + 1])
                elif word.startswith("--set="):
                    assignments.append(word.partition("=")[2])
    return tfr_env, assignments, commands


def resolved_config(workflow: dict[str, Any], job: dict[str, Any], *, dispatched: bool = True) -> DeployConfig:
    env, assignments, commands = job_settings(workflow, job, dispatched=dispatched)
    configs = {m for line in commands for m in re.findall(r"--config[ =]+\"?([^\"\s]+)", line)}
    assert len(configs) <= 1, configs
    file_data = read_toml(REPO / (configs.pop() if configs else "deploy.toml"))
    return build_config(file_data, env, assignments)


def admin_protected(cfg: DeployConfig) -> bool:
    """Does the runtime ask ModelService callers for the admin token? (as pipeline/targets decide)"""
    rollout = cfg.rollout
    if rollout.target == "local" or rollout.admin_api != "auto":
        return rollout.admin_api != "open"
    return rollout.image.startswith("tfrollout/")  # tensorflow/serving has no --admin_token_file


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def admin_exposure(cfg: DeployConfig) -> str | None:
    """Why the runtime's ModelService (reload, unload: it decides what code the server runs) is
    reachable from other machines without a token, or None when it is not."""
    rollout = cfg.rollout
    if rollout.target == "local":  # our server binds rollout.host, with a token unless admin_api=open
        return None if is_loopback(rollout.host) or admin_protected(cfg) else f"local server on {rollout.host}"
    if admin_protected(cfg):
        return None
    if rollout.target == "swarm" or rollout.network_mode == "host":  # TF Serving listens on 0.0.0.0
        return f"{rollout.image} on the engine host's network, every interface, no admin token"
    if not is_loopback(rollout.host):
        return f"{rollout.image}'s gRPC port published on {rollout.host}, no admin token"
    return None


def dotted(env_name: str) -> tuple[str, ...]:
    return tuple(env_name[len(ENV_PREFIX):].lower().split(ENV_NESTING))


def is_current_key(path: tuple[str, ...]) -> bool:
    return len(path) >= 2 and path[-1] in known_keys(path[:-1])


# --------------------------------------------------------------------------- tests


def test_template_is_a_valid_github_workflow():
    proc = schema_check(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workflow = load_workflow()
    assert set(workflow["jobs"]) == {"demo", "own-model"}
    for name, job in workflow["jobs"].items():
        assert job.get("timeout-minutes"), name
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
        assert uploads and uploads[0].get("if") == "always()", name  # reports even when a stage fails


@pytest.mark.parametrize("breakage", [
    ("runs-on: ubuntu-latest\n    timeout-minutes: 90", "timeout-minutes: 90"),  # a job without runs-on
    ("timeout-minutes: 30", "timeout-minutes: soon"),
    ("    steps:\n      - uses: actions/checkout@v4\n      - uses: actions/setup-python@v5",
     "    steps:\n      - usez: actions/checkout@v4\n      - uses: actions/setup-python@v5"),
])
def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path, breakage: tuple[str, str]):
    old, new = breakage
    text = TEMPLATE.read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "deploy.yml"
    broken.write_text(text.replace(old, new))
    proc = schema_check(broken)
    assert proc.returncode != 0, proc.stdout


def test_every_key_the_template_sets_is_a_current_config_key():
    workflow = load_workflow()
    text = TEMPLATE.read_text()
    # every TFROLLOUT_ name anywhere in the file (comments included) names a config key
    names = set(re.findall(r"\bTFROLLOUT_\w+", text))
    assert names, "the template sets no config through the environment"
    stale = sorted(n for n in names if ENV_NESTING not in n or not is_current_key(dotted(n)))
    assert not stale, f"not a current config key: {stale}"
    # no deprecated key, in any spelling (and not the deprecated --target flag either)
    for old in RENAMED_KEYS:
        env_name = ENV_PREFIX + old.upper().replace(".", ENV_NESTING)
        assert old not in text and env_name not in text, old
    assert not re.search(r"--target\b", text)

    checked = 0
    for name, job in workflow["jobs"].items():
        env, assignments, commands = job_settings(workflow, job)
        if not commands:
            continue
        for assignment in assignments:
            key = assignment.partition("=")[0]
            assert is_current_key(tuple(key.split("."))), f"{name}: --set {key}"
        cfg = resolved_config(workflow, job)  # the project's loader: a bad key or value raises here
        assert cfg.warnings == [], f"{name}: {cfg.warnings}"
        checked += 1
    assert checked == 2

    own = resolved_config(workflow, workflow["jobs"]["own-model"])
    assert own.rollout.target == "docker" and own.rollout.image.startswith("tensorflow/serving:")
    assert own.storage.uri == SAMPLE_VARS["MODEL_STORE_URI"]
    assert own.data.source == "dir" and str(own.model.path) == "models/source.keras"
    assert own.export.model_name == "classifier" and own.gate.min_accuracy == 0.5
    assert own.verify.endpoint == f"127.0.0.1:{own.rollout.grpc_port}"


def test_own_model_job_is_a_bring_your_own_model_deploy_with_a_json_report():
    workflow = load_workflow()
    job = workflow["jobs"]["own-model"]
    env, assignments, commands = job_settings(workflow, job)
    assert {"TFROLLOUT_MODEL__PATH", "TFROLLOUT_DATA__PATH", "TFROLLOUT_DATA__SOURCE"} <= set(env)
    assert any(a.startswith("gate.min_accuracy=") for a in assignments)
    # the engine over mutual TLS, certificates from secrets
    assert job["env"]["DOCKER_HOST"].startswith("tcp://") and job["env"]["DOCKER_HOST"].endswith(":2376")
    assert job["env"]["DOCKER_TLS_VERIFY"] == "1"
    certs = next(s for s in job["steps"] if "DOCKER_CERT_PATH" in str(s.get("run", "")))
    assert all(str(v).startswith("${{ secrets.") for v in certs["env"].values())
    assert job["env"]["AWS_SECRET_ACCESS_KEY"] == "${{ secrets.AWS_SECRET_ACCESS_KEY }}"
    deploy = [c for c in commands if "tfrollout deploy" in c]
    assert len(deploy) == 1 and "--json" in deploy[0] and "> deploy-report.json" in deploy[0]
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert "deploy-report.json" in upload["with"]["path"]
    demo = workflow["jobs"]["demo"]
    assert any(s.get("run") == "make deploy" for s in demo["steps"])
    assert any("--json" in c for c in job_settings(workflow, demo)[2])


def test_no_admin_port_is_published_beyond_loopback_without_a_token():
    workflow = load_workflow()
    for dispatched in (True, False):
        for name, job in workflow["jobs"].items():
            if job_settings(workflow, job)[2]:
                assert admin_exposure(resolved_config(workflow, job, dispatched=dispatched)) is None, name
    # nothing else publishes a port on every interface (docker run -p, compose-style ports)
    text = TEMPLATE.read_text()
    assert "0.0.0.0" not in text
    for line in text.splitlines():
        if re.search(r"\bdocker\b.*\b(run|create)\b", line):
            for spec in re.findall(r"(?:\s-p|--publish)[ =]+(\S+)", line):
                assert spec.startswith("127.0.0.1:"), line


@pytest.mark.parametrize(("change", "exposed"), [
    ({}, False),
    ({"TFROLLOUT_ROLLOUT__NETWORK_MODE": "host"}, True),
    ({"TFROLLOUT_ROLLOUT__HOST": "0.0.0.0"}, True),
    ({"TFROLLOUT_ROLLOUT__HOST": "serving.example.com"}, True),
    ({"TFROLLOUT_ROLLOUT__TARGET": "swarm"}, True),
    ({"TFROLLOUT_ROLLOUT__IMAGE": "tfrollout/model-server:tf2.21.0",
      "TFROLLOUT_ROLLOUT__ADMIN_API": "auto", "TFROLLOUT_ROLLOUT__HOST": "0.0.0.0"}, False),  # token
])
def test_the_admin_guard_tells_exposed_from_protected(change: dict[str, str], exposed: bool):
    workflow = load_workflow()
    job = workflow["jobs"]["own-model"]
    job["env"].update(change)
    assert (admin_exposure(resolved_config(workflow, job)) is not None) is exposed


def test_a_renamed_or_deprecated_key_would_fail():
    """The key checks are not vacuous: the template with a stale key is refused."""
    workflow = load_workflow()
    job = workflow["jobs"]["own-model"]
    job["env"]["TFROLLOUT_VERIFY__TARGET"] = job["env"].pop("TFROLLOUT_VERIFY__ENDPOINT")
    assert resolved_config(workflow, job).warnings  # accepted for one release, with a warning
    assert not is_current_key(dotted("TFROLLOUT_VERIFY__TARGET"))
    job["env"]["TFROLLOUT_ROLLOUT__NETWORK"] = "published"  # a misspelt (or since renamed) key
    with pytest.raises(ConfigError, match="rollout.network"):
        resolved_config(workflow, job)
    assert not is_current_key(dotted("TFROLLOUT_ROLLOUT__NETWORK"))


def test_a_push_run_resolves_like_a_manual_run_with_the_defaults():
    """On a push there are no inputs: every `inputs.x || 'default'` must fall back to the same."""
    workflow = load_workflow()
    job = workflow["jobs"]["own-model"]
    manual, push = (resolved_config(workflow, job, dispatched=d).model_dump() for d in (True, False))
    assert manual == push
