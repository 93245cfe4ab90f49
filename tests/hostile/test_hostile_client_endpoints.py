"""Hostile endpoints files (issue 15 item 5, and `timeout = inf` from item 10): whatever is wrong with the file,
reading it gives the usual one-line error, short, naming the file; absurd sizes are refused before parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from xiyou.cli import main as xiyou_cli
from xiyou.endpoints import MAX_MESSAGE_CHARS, EndpointError, load_endpoints

OK = '[wukong]\nbase_url = "http://127.0.0.1:23333/v1"\n'

CASES = {
    "nested_100k": ("x = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "nested_value": (OK + "model = " + "[" * 100_000, "nested too deeply"),
    "keys_300k": ("[wukong]\n" + "".join(f"k{i} = 1\n" for i in range(300_000)), "larger than"),
    "keys_200": (OK + "".join(f"k{i} = 1\n" for i in range(200)), "201 keys; a table has at most 64"),
    "unknown_keys_60": (OK + "".join(f"k{i} = 1\n" for i in range(60)), "and 55 more problems"),
    "tables_40": ("".join(f"[t{i}]\n" for i in range(40)), "40 tables"),
    "model_60mb_capped": (OK + 'model = "' + "m" * 200_000 + '"\n', "at most 256 characters"),
    "long_table_name": (f'["{"x" * 5000}"]\nbase_url = "http://h/v1"\n', "unknown character id"),
    "timeout_inf": (OK + "timeout = inf\n", "finite number"),
    "timeout_nan": (OK + "timeout = nan\n", "finite number"),
    "non_table_value": ("wukong = " + repr("v" * 10_000) + "\n", "must be a table"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_file_is_one_short_line(name: str, tmp_path: Path) -> None:
    text, expected = CASES[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EndpointError) as err:
        load_endpoints(path)
    message = str(err.value)
    assert expected in message and message.startswith(str(path))
    assert "\n" not in message and len(message) <= MAX_MESSAGE_CHARS


def test_bad_utf8_and_files_that_are_not_files(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[wukong]\nmodel = "\xe6\xff"\n')
    with pytest.raises(EndpointError, match=r"latin1\.toml: not UTF-8 text \(byte 0xe6 at offset 18\)"):
        load_endpoints(bad)
    with pytest.raises(EndpointError, match=r"not a regular file"):
        load_endpoints(tmp_path)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # reading it would wait forever for a writer
    with pytest.raises(EndpointError, match=r"fifo\.toml: not a regular file"):
        load_endpoints(fifo)


def test_a_url_password_in_a_bad_base_url_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text('[wukong]\nbase_url = "ftp://monkey:peaches-secret@host/v1"\n', encoding="utf-8")
    with pytest.raises(EndpointError, match="http://") as err:
        load_endpoints(path)
    assert "peaches-secret" not in str(err.value)


def test_xiyou_room_says_it_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 100_000, encoding="utf-8")
    result = CliRunner().invoke(xiyou_cli, ["room", "--endpoints", str(path), "--members", "wukong", "hi"])
    assert result.exit_code == 1
    assert "nested too deeply" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
