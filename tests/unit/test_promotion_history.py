"""The promotion history kept in the runtime's config file (pipeline/rollout/history.py)."""

from __future__ import annotations

import pytest

from pipeline.rollout.history import (
    MAX_ENTRIES,
    advanced,
    read_histories,
    rollback_target,
    with_histories,
)
from serving import tfs_config

CONFIG = 'model_config_list {\n  config {\n    name: "digits"\n    base_path: "/models/digits"\n  }\n}\n'


@pytest.mark.parametrize("history, stable, expected", [
    ([], 1, [1]), ([1], 1, [1]), ([1], 3, [1, 3]),           # first deploy; unchanged; a promotion
    ([1, 3, 5], 3, [1, 3]),                                   # a rollback pops what came after
    ([1, 3], None, [1, 3]),                                   # a config without stable changes nothing
])
def test_advanced(history, stable, expected):
    assert advanced(history, stable) == expected


def test_history_is_bounded():
    history: list[int] = []
    for v in range(1, 200):
        history = advanced(history, v)
    assert len(history) == MAX_ENTRIES and history[-1] == 199


def test_history_lines_round_trip_and_the_config_still_parses_as_tf_serving_reads_it():
    text = with_histories(CONFIG, {"digits": [1, 3], "other": [7]})
    assert read_histories(text) == {"digits": [1, 3], "other": [7]}
    parsed = tfs_config.parse_model_server_config(text)  # comments: ignored by the text-proto parser
    assert [c.name for c in parsed.model_config_list.config] == ["digits"]
    again = with_histories(text, {"digits": [1, 3, 4]})  # rewriting replaces the old lines
    assert read_histories(again) == {"digits": [1, 3, 4]} and again.count("# tfrollout promoted") == 1


@pytest.mark.parametrize("history, available, current, expected", [
    ([1, 3], {1, 2, 3}, 3, 1),        # 2 was never stable (its canary failed): skipped
    ([1, 2, 3], {1, 3}, 3, 1),        # 2 is gone from the host or the store: the one before
    ([1], {1, 2}, 1, None),           # nothing verified before v1
    ([], {1, 2, 3}, 3, None),         # no history recorded: nothing is restored unverified-by-history
    ([1, 3, 5], {1, 3, 5}, 3, 1),     # current in the middle (a later promotion was rolled back by hand)
])
def test_rollback_target(history, available, current, expected):
    assert rollback_target(history, available, current) == expected
