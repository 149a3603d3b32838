"""Every command answers --help with help text, and the group has --version."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from datakit import __version__
from datakit.cli import COMMANDS, cli


def _walk(command, prefix=()):
    yield prefix, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, prefix + (name,))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name):
    runner = CliRunner()
    top = cli.get_command(None, name)
    assert top is not None, f"command {name!r} is listed but its module does not load"
    for path, command in _walk(top, (name,)):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert (command.help or command.short_help or "").strip(), f"{' '.join(path)} has no help text"
        assert "Usage:" in result.output


def test_version_and_short_help_flag():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["-h"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
