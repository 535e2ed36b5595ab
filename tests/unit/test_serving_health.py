"""`tfrollout status`'s verdict and exit code, from the facts it gathered."""

import json

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.commands.serving_health import EXIT_CODES, judge, shown

RUNNING = {"running": True, "target": "local", "model": "digits",
           "config": {"versions": [1, 2], "labels": {"stable": 2, "canary": 1}}}


@pytest.mark.parametrize(("facts", "verdict", "why"), [
    ({"running": False}, "not running", "not running"),
    ({**RUNNING, "states": {"1": "AVAILABLE", "2": "AVAILABLE"}}, "healthy", None),
    ({**RUNNING, "states": {"1": "AVAILABLE", "2": "LOADING"}}, "degraded", "v2 LOADING"),
    ({**RUNNING, "states": {"1": "AVAILABLE"}}, "degraded", "v2 not loaded"),
    ({**RUNNING, "states_error": "deadline exceeded"}, "degraded", "deadline exceeded"),
    ({**RUNNING, "config": None}, "degraded", "serves no version of 'digits'"),
    ({**RUNNING, "config": {"versions": [1], "labels": {"stable": 2}}, "states": {"1": "AVAILABLE"}},
     "degraded", "stable -> v2"),
    ({"running": True, "target": "swarm", "model": "digits", "services": {
        "s-digits": {"model": "digits", "replicas": [{"state": "starting"}, {"state": "running"}]}}}, "healthy", None),
    ({"running": True, "target": "swarm", "model": "digits", "services": {
        "s-digits": {"model": "digits", "replicas": [{"state": "starting"}]}}}, "degraded", "no replica"),
    ({"running": True, "target": "swarm", "model": "digits", "services": {
        "s-fetch": {"model": "digits", "role": "fetch"}}}, "degraded", "no swarm service"),
    # issue 27 (1): a supervisor that gave up, or one restarting a crashing server, is never silent
    ({"running": False, "supervisor": {"state": "gave_up", "consecutive_failures": 20, "last_exit": "killed by SIGABRT",
                                       "last_inflight": [{"model": "digits", "version": 1, "signature": "serving_default",
                                                          "inputs": {"x": ["float32", [3]]}}]}},
     "not running", "gave up after 20 quick crashes (last exit: killed by SIGABRT; in flight: model=digits version=1 "
                    "signature=serving_default inputs=x:float32[3])"),
    ({**RUNNING, "states": {"1": "AVAILABLE", "2": "AVAILABLE"},
      "supervisor": {"state": "backoff", "consecutive_failures": 3, "last_exit": "killed by SIGKILL"}},
     "degraded", "crash-looping: restarting after 3 quick crash(es) (last exit: killed by SIGKILL)"),
])
def test_the_verdict_names_what_is_wrong(facts, verdict, why):
    got, reason = judge(facts)
    assert got == verdict
    assert (reason is None) if why is None else (why in reason)


def test_codes_are_distinct_and_human_lines_never_say_none():
    assert EXIT_CODES["healthy"] == 0 and len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert shown(None) == "none" and shown([]) == "none" and shown(None, "not read") == "not read"
    assert shown([1, 2]) == "v1, v2" and shown({"stable": 2}) == "stable -> v2"
    assert shown({"2": "AVAILABLE"}) == "v2 AVAILABLE"


def test_status_with_nothing_running_exits_10(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == EXIT_CODES["not running"]
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["health"] == "not running" and report["running"] is False
    human = CliRunner().invoke(app, ["status"])
    assert human.exit_code == 10 and "None" not in human.stdout and "not running" in human.stdout
