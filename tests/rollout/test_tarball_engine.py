"""Pure parts of the docker target: the tar builder (no absolute paths, no `..`) and engine settings."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import RolloutConfig
from pipeline.targets.docker import engine_settings
from pipeline.targets.tarball import build_tar, read_member, safe_name, version_tar


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a/..", "", "a//b", "a\\b", ".", "a/./../.."])
def test_unsafe_names_are_refused(bad: str):
    with pytest.raises(ValueError):
        safe_name(bad)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "/", "x.pb"]), min_size=1, max_size=5))
def test_every_accepted_name_stays_below_the_root(parts):
    name = "/".join(parts)
    try:
        norm = safe_name(name)
    except ValueError:
        return
    assert not norm.startswith(("/", "..")) and ".." not in norm.split("/")


def test_version_tar_layout_marker_last_and_links_refused(tmp_path: Path):
    src = tmp_path / "v"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "variables.index").write_bytes(b"idx")
    data = version_tar(src, "digits", 7, (".done", b"ok"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[-1] == "digits/7/.done"
    assert {"digits/7/saved_model.pb", "digits/7/variables/variables.index"} <= set(names)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names)
    assert all(m.uid == 0 and m.gid == 0 for m in members)
    assert read_member(data, "saved_model.pb") == b"pb"
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="symlink"):
        version_tar(src, "digits", 7, (".done", b"ok"))
    with pytest.raises(ValueError):
        version_tar(src, "../digits", 7, (".done", b"ok"))


def test_build_tar_round_trip():
    data = build_tar([("models.config", b"model_config_list {}")])
    assert read_member(data, "models.config") == b"model_config_list {}"


def test_engine_settings_from_env_and_config(tmp_path: Path):
    cfg = RolloutConfig()
    assert engine_settings(cfg, {})["base_url"] == "unix:///var/run/docker.sock"
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    got = engine_settings(cfg, env)
    assert got["base_url"] == "tcp://127.0.0.1:2376" and got["tls"]["ca"] == str(tmp_path / "ca.pem")
    assert engine_settings(cfg, {**env, "DOCKER_TLS_VERIFY": "0"})["tls"] is None
    ssh = RolloutConfig(docker_host="ssh://deploy@127.0.0.1")
    assert engine_settings(ssh, env)["base_url"] == "ssh://deploy@127.0.0.1" and engine_settings(ssh, env)["tls"] is None


SSH_CONFIG = """
Host engine
  HostName 127.0.0.1
  Port 2222
Host plain
  HostName 10.0.0.9
Host *.corp
  Port 2200
"""


@pytest.mark.parametrize("url, expected", [
    ("ssh://engine", "ssh://engine:2222"),              # the SDK would have written :22 and ignored Port
    ("ssh://deploy@engine", "ssh://deploy@engine:2222"),
    ("ssh://engine:2022", "ssh://engine:2022"),         # an explicit port wins, as with ssh itself
    ("ssh://plain", "ssh://plain"),                     # no Port for the host: the SDK's 22 is right
    ("ssh://build.corp", "ssh://build.corp:2200"),      # patterns apply
    ("tcp://engine:2376", "tcp://engine:2376"),
])
def test_ssh_url_takes_the_port_from_ssh_config(url: str, expected: str):
    from pipeline.targets.docker import ssh_url_with_config_port

    assert ssh_url_with_config_port(url, SSH_CONFIG) == expected


@pytest.mark.parametrize("url, tls, error, says", [
    ("ssh://e:22", False, "SSHException: Server '[e]:22' not found in known_hosts", "ssh-keyscan"),
    ("ssh://e:22", False, "AuthenticationException: Authentication failed.", "IdentityFile"),
    ("tcp://e:2376", False, "APIError: 400 Client Error: Client sent an HTTP request to an HTTPS server.",
     "DOCKER_TLS_VERIFY=1"),
    ("tcp://e:2376", False, "ConnectionError: ('Connection aborted.', RemoteDisconnected(...))", "DOCKER_TLS_VERIFY"),
])
def test_unreachable_engine_errors_carry_the_fix(url: str, tls: bool, error: str, says: str):
    from pipeline.targets.docker import unreachable_hint

    assert says in unreachable_hint(url, tls, error)


def test_no_hint_where_the_error_does_not_say_enough():
    from pipeline.targets.docker import unreachable_hint

    assert unreachable_hint("tcp://e:2376", True, "ConnectionError: ('Connection aborted.')") == ""  # TLS is on
    assert unreachable_hint("unix:///var/run/docker.sock", False, "FileNotFoundError: No such file") == ""
