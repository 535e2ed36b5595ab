"""Several endpoints behind one client (round_robin) and verify over an endpoint list.

Two real server processes (built on the official servicers) with different default versions:
which one answered is visible in every response's model_spec.version."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import VerifyError
from pipeline.verify.compare import Tolerance
from pipeline.verify.golden import load_golden
from pipeline.verify.runner import Endpoint, ServedModel, merge_reports, verify_served
from serving.client import PredictionClient, TLSConfig
from serving.client.endpoints import ROUND_ROBIN, channel_target, split_endpoints
from tests.client.conftest import MODEL, Served, build_model, start_fake
from tests.support.procs import stop_process

FAKE_DNS = {"replica-a": "127.0.0.1", "replica-b": "127.0.0.2", "v6-host": "::1"}


def test_a_single_address_keeps_the_default_policy_and_a_list_is_balanced() -> None:
    assert channel_target("127.0.0.1:8500") == ("127.0.0.1:8500", [])
    assert channel_target("dns:///serving.example:8500") == ("dns:///serving.example:8500", [ROUND_ROBIN])
    target, options = channel_target("replica-a:8500, replica-b:8501", FAKE_DNS.__getitem__)
    assert (target, options) == ("ipv4:127.0.0.1:8500,127.0.0.2:8501", [ROUND_ROBIN])
    assert channel_target("[::1]:1,v6-host:2", FAKE_DNS.__getitem__)[0] == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize("spec, problem", [
    ("127.0.0.1:1,::1:2", "mixes IPv4 and IPv6"),
    ("127.0.0.1:1,127.0.0.1", "is not host:port"),
    ("127.0.0.1:1,127.0.0.1:99999", "is not host:port"),
    ("127.0.0.1:1,,127.0.0.1:2", "empty address"),
    ("127.0.0.1:1,no-such-host.invalid:2", "cannot resolve"),
])
def test_bad_endpoint_lists_are_one_clear_error(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        channel_target(spec)


def test_tls_over_a_list_needs_the_name_the_certificates_carry(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"")
    with pytest.raises(ValueError, match="needs a server name"):
        PredictionClient("127.0.0.1:1,127.0.0.1:2", tls=TLSConfig(ca_cert=ca))


def test_merged_report_fails_if_any_address_fails_and_names_it() -> None:
    def report(endpoint: str, ok: bool, diff: float) -> dict:
        return {"ok": ok, "reason": None if ok else "output 'p' differs", "endpoint": endpoint, "max_abs_diff": diff,
                "served_versions": [1], "requests": 4, "agreement": 1.0 if ok else 0.5, "latency_ms": {}}

    merged = merge_reports("a:1,b:2", [report("a:1", True, 0.0), report("b:2", False, 0.3)])
    assert not merged["ok"] and merged["reason"] == "b:2: output 'p' differs"
    assert merged["requests"] == 8 and merged["agreement"] == 0.5 and set(merged["endpoints"]) == {"a:1", "b:2"}
    assert merge_reports("a:1,b:2", [report("a:1", True, 0.0), report("b:2", True, 1e-7)])["ok"]


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory, model_base: Path) -> Iterator[Served]:
    """Versions 1 and 2 as `served` has them (same weights) plus version 5 (other weights), so
    its default version is 5 where `served`'s is 2."""
    import shutil

    base = tmp_path_factory.mktemp("second") / MODEL
    for version in ("1", "2"):
        shutil.copytree(model_base / version, base / version)
    build_model(base / "5", seed=5)
    proc, port = start_fake(base)
    try:
        yield Served(f"127.0.0.1:{port}", MODEL, base, port)
    finally:
        stop_process(proc)


def test_one_client_over_two_servers_reaches_both(served: Served, second: Served) -> None:
    x = {"inputs": np.zeros((1, 8, 8, 1), np.float32)}
    seen: Counter = Counter()
    with PredictionClient(f"{served.target},{second.target}", retries=1) as client:
        for _ in range(20):
            seen[client.predict_detailed(MODEL, x).version] += 1
    assert set(seen) == {2, 5} and min(seen.values()) >= 5, seen  # round_robin, not pick_first


def test_verify_over_a_list_checks_every_address(served: Served, second: Served) -> None:
    both = Endpoint(f"{served.target},{second.target}")
    stable = verify_served(both, ServedModel(MODEL, label="stable"), load_golden(served.base / "1"), Tolerance(),
                           batch_size=4)
    assert stable["ok"] and set(stable["endpoints"]) == {served.target, second.target}
    assert all(r["ok"] and r["requests"] == 4 for r in stable["endpoints"].values())

    latest = verify_served(both, ServedModel(MODEL), load_golden(served.base / "2"), Tolerance(), batch_size=4)
    assert not latest["ok"] and latest["reason"].startswith(f"{second.target}: output 'probabilities' differs")
    assert latest["endpoints"][served.target]["ok"] and latest["served_versions"] == [2, 5]


def test_an_unreachable_address_in_the_list_fails_verify(served: Served) -> None:
    from tests.support.procs import free_port

    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(VerifyError, match=dead):
        verify_served(Endpoint(f"{served.target},{dead}"), ServedModel(MODEL, label="stable"),
                      load_golden(served.base / "1"), Tolerance(), deadline_s=2.0)


def test_split_keeps_uris_whole() -> None:
    assert split_endpoints("ipv4:127.0.0.1:1,127.0.0.1:2") == ["ipv4:127.0.0.1:1,127.0.0.1:2"]
    assert split_endpoints(" a:1 , b:2 ") == ["a:1", "b:2"]


def test_loadtest_cli_over_a_list_spreads_and_counts_versions(tmp_path: Path, monkeypatch, served: Served,
                                                              second: Served) -> None:
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.chdir(tmp_path)  # no deploy.toml, an empty run record
    result = CliRunner().invoke(app, ["loadtest", "--endpoint", f"{served.target},{second.target}", "--model", MODEL,
                                      "--count", "40", "--concurrency", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 40 and data["errors"] == {}
    assert set(data["versions"]) == {"2", "5"} and min(data["versions"].values()) >= 10, data["versions"]
