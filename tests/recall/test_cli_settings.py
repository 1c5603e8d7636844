"""`vitrine recall` registration and RecallSettings (pure)."""

from __future__ import annotations

import pytest

from app.cli import build_parser
from recall.settings import RecallSettings
from recall.worker import worker_consumer_config, worker_producer_config
from vitrine.errors import ConfigError
from vitrine.settings import load


def test_recall_command_is_registered_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["recall", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for word in ("--max-requests", "--burst", "kafka_replyTopic", "VITRINE_RECALL_GROUP_ID"):
        assert word in out
    args = parser.parse_args(["recall", "--max-requests", "5", "--burst"])
    assert (args.max_requests, args.burst, callable(args.func)) == (5, True, True)


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(RecallSettings)
    assert (s.metrics_port, s.recall_consistency_level, s.recall_group_id) == (
        9465,
        "Bounded",
        "vitrine-recall",
    )
    monkeypatch.setenv("VITRINE_RECALL_CONSISTENCY_LEVEL", "Strong")
    monkeypatch.setenv("VITRINE_RECALL_BATCH_MAX", "32")
    s = load(RecallSettings)
    assert (s.recall_consistency_level, s.recall_batch_max) == ("Strong", 32)


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITRINE_RECALL_CONSISTENCY_LEVEL", "Sometimes")
    with pytest.raises(ConfigError) as info:
        load(RecallSettings)
    assert "VITRINE_RECALL_CONSISTENCY_LEVEL" in str(info.value)


def test_kafka_configs_are_at_least_once_and_java_compatible() -> None:
    s = load(RecallSettings, recall_session_timeout_ms=6000, recall_reply_timeout_s=2)
    consumer = worker_consumer_config(s)
    assert consumer["enable.auto.offset.store"] is False
    assert consumer["session.timeout.ms"] == 6000
    assert consumer["group.id"] == s.recall_group_id
    producer = worker_producer_config(s)
    assert producer["partitioner"] == "murmur2_random"
    assert producer["acks"] == "all" and producer["message.timeout.ms"] == 2000
