"""Hostile arguments to pipeline.serve (issue 15 item 10): impossible ports, a wildcard bind without a word about
API keys, and extra LMDeploy arguments that would silently override the bind address."""

from __future__ import annotations

import pytest

from pipeline import serve


@pytest.mark.parametrize("port", ["-5", "70000", "abc"])
def test_an_impossible_port_is_refused(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        serve.main(["--dry-run", "--port", port])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--port" in err and "is not a port number" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        serve.main(["--dry-run", "--proxy", port])
    assert "is not a port number" in capsys.readouterr().err


def test_ports_past_65535_for_later_servers_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--dry-run", "--port", "65534"]) == 1  # four servers: 65534, 65535, then none left
    assert "past 65535" in capsys.readouterr().err


def test_a_wildcard_bind_warns_that_lmdeploy_checks_no_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--dry-run", "--characters", "wukong", "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "wukong binds 0.0.0.0:23333" in err and "without API keys" in err and "--api-keys" in err
    assert serve.main(["--dry-run", "--characters", "wukong"]) == 0
    assert "warning" not in capsys.readouterr().err  # loopback: nothing to warn about
    assert serve.main(["--dry-run", "--characters", "wukong", "--host", "0.0.0.0", "--", "--api-keys", "k"]) == 0
    assert "wukong binds" not in capsys.readouterr().err  # keys given: the person knows
    assert serve.main(["--dry-run", "--characters", "wukong", "--proxy", "--proxy-host", "0.0.0.0"]) == 0
    assert "the proxy binds 0.0.0.0:8000" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [["--server-name", "0.0.0.0"], ["--server-name=0.0.0.0"], ["--server-port", "1"], ["--model-name", "x"]],
)
def test_extra_arguments_cannot_override_the_bind_address_or_names(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve.main(["--dry-run", "--characters", "wukong", "--host", "127.0.0.1", "--", *extra]) == 1
    err = capsys.readouterr().err
    assert f"extra argument {extra[0]!r} after -- would override" in err
    if "--server-name" in extra[0]:
        assert "use --host instead" in err
    # Other LMDeploy options still pass through.
    assert serve.main(["--dry-run", "--characters", "wukong", "--", "--max-batch-size", "8"]) == 0
    assert "--max-batch-size 8" in capsys.readouterr().out
