"""The `vitrine` command line: help, errors with reason codes, exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from app.cli import build_parser, main


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


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str, str]]:
    """(command path, one-line help, description) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield f"{path} {name}", helps.get(name, ""), child.description or ""
                yield from _walk(child, f"{path} {name}")


def test_every_subcommand_has_help_and_a_description() -> None:
    commands = list(_walk(build_parser(), "vitrine"))
    assert len(commands) > 10
    for command, one_line, description in commands:
        assert one_line.strip(), f"`{command}` has no one-line help in its parent's --help"
        assert len(description) >= 30, f"`{command} --help` has no description"
