"""The command line parses what the README documents, and refuses what it cannot use."""

from __future__ import annotations

import pytest

from cpworker.cli import parser


def test_serve_options() -> None:
    args = parser().parse_args(
        ["serve", "handlers.build:app", "--action", "build", "--concurrency", "8",
         "--query", "build:ProjectName=web", "--drain-timeout", "5", "--log-level", "DEBUG"]
    )  # fmt: skip
    assert args.app == "handlers.build:app"
    assert args.action == ["build"]
    assert args.concurrency == 8
    assert dict(args.query) == {"build": {"ProjectName": "web"}}
    assert args.drain_timeout == 5.0
    assert args.log_level == "DEBUG"


@pytest.mark.parametrize("query", ["ProjectName=web", "build:ProjectName", "build:=web"])
def test_malformed_query_is_refused(query: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["serve", "m:app", "--query", query])
    assert exited.value.code == 2
    assert "expected ACTION:Property=value" in capsys.readouterr().err
