"""The `vitrine` command line: help, errors with reason codes, exit codes."""

from __future__ import annotations

import pytest

from vitrine.cli import build_parser, main


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("infra", "topics", "VITRINE_CONFIG"):
        assert command in out


@pytest.mark.parametrize("command", [["infra"], ["topics"]])
def test_verbs_are_required(command: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(command)
    assert info.value.code == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: vitrine" in capsys.readouterr().out


def test_config_error_is_reported_with_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VITRINE_KAFKA_PORT", "not-a-port")
    assert main(["topics", "list"]) == 1
    err = capsys.readouterr().err
    assert "[invalid_config]" in err and "VITRINE_KAFKA_PORT" in err


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sub_parser in sub.choices.items():  # type: ignore[union-attr]
        assert sub_parser.description or sub_parser.format_help(), name
        assert sub.choices[name].format_help().startswith("usage: vitrine")  # type: ignore[index]
