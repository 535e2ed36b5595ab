"""The one waiting rule (pure) and the package's light import."""

from __future__ import annotations

import subprocess
import sys

from serving.client.availability import Availability, assess
from tests.client.conftest import REPO


def test_a_wanted_version_is_served_failed_or_pending() -> None:
    assert assess({1: ("AVAILABLE", ""), 2: ("LOADING", "")}, 1) == Availability(served=1)
    failed = assess({2: ("END", "Could not find SavedModel")}, 2)
    assert failed.error == "Could not find SavedModel" and failed.served is None and failed.done
    pending = assess({2: ("LOADING", "")}, 2)
    assert not pending.done and pending.detail == "state LOADING"
    assert assess({1: ("AVAILABLE", "")}, 2).detail == "state UNKNOWN"  # not reported yet
    assert not assess({2: ("END", "")}, 2).done  # unloaded without an error: not a load failure


def test_any_version_takes_the_highest_available_and_fails_only_when_all_failed() -> None:
    assert assess({1: ("AVAILABLE", ""), 3: ("AVAILABLE", ""), 4: ("LOADING", "")}).served == 3
    assert not assess({1: ("END", "bad"), 2: ("LOADING", "")}).done  # 2 may still load
    every = assess({1: ("END", "bad one"), 2: ("END", "bad two")})
    assert every.error == "version 2: bad two"
    assert assess({}).detail == "no versions reported yet" and not assess({}).done
    assert assess({1: ("START", ""), 2: ("LOADING", "")}).detail == \
        "no version AVAILABLE yet (1: START, 2: LOADING)"


def test_the_pure_parts_import_without_grpc_or_numpy() -> None:
    code = ("import sys, serving.client, serving.client.availability, serving.client.errors; "
            "print(sorted(m for m in ('grpc', 'numpy', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
