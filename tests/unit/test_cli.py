"""cli.parse_args: flags, their KUBELLM_* variables, and the messages for bad input."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from kubellm_gateway.cli import parse_args
from kubellm_gateway.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KUBELLM_"):
            monkeypatch.delenv(name)


def test_defaults(tmp_path: Path) -> None:
    assert parse_args(["--manifests", str(tmp_path)]) == Settings(manifests=tmp_path)


FLAGS = [
    "--host=127.0.0.2",
    "--port=9000",
    "--metrics-port=0",
    "--max-body-bytes=1024",
    "--reload-interval=0.5",
    "--log-level=debug",
]
PARSED = Settings(
    manifests=Path(),
    host="127.0.0.2",
    port=9000,
    metrics_port=0,
    max_body_bytes=1024,
    reload_interval=0.5,
    log_level="debug",
)


def test_every_flag(tmp_path: Path) -> None:
    assert parse_args([f"--manifests={tmp_path}", *FLAGS]) == replace(PARSED, manifests=tmp_path)


def test_every_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELLM_MANIFESTS", str(tmp_path))
    for flag in FLAGS:
        name, value = flag.removeprefix("--").split("=")
        monkeypatch.setenv("KUBELLM_" + name.upper().replace("-", "_"), value)
    assert parse_args([]) == replace(PARSED, manifests=tmp_path)


def test_flag_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELLM_MANIFESTS", "/nonexistent")
    monkeypatch.setenv("KUBELLM_PORT", "7000")
    monkeypatch.setenv("KUBELLM_LOG_LEVEL", "error")
    settings = parse_args(["--manifests", str(tmp_path), "--port", "7001"])
    assert (settings.manifests, settings.port, settings.log_level) == (tmp_path, 7001, "error")


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        parse_args(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err


def test_manifests_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of([], capsys)
    assert "--manifests (or KUBELLM_MANIFESTS) is required" in err


def test_empty_manifests_variable_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBELLM_MANIFESTS", "")
    assert "--manifests (or KUBELLM_MANIFESTS) is required" in error_of([], capsys)


@pytest.mark.parametrize("what", ["missing", "file"])
def test_manifests_must_be_a_folder(
    what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / what
    if what == "file":
        path.write_text("")
    assert f"--manifests {path}: not a folder" in error_of(["--manifests", str(path)], capsys)


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--log-level", "INFO", "--log-level INFO: expected debug, info, warning or error"),
        ("--port", "http", "--port"),
        ("--reload-interval", "1s", "--reload-interval"),
    ],
)
def test_bad_flag_values_name_the_flag(
    flag: str, value: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert named in error_of(["--manifests", str(tmp_path), flag, value], capsys)


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBELLM_PORT", "http")
    assert "KUBELLM_PORT" in error_of(["--manifests", str(tmp_path)], capsys)


def test_flag_beats_a_bad_environment_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELLM_PORT", "http")
    assert parse_args(["--manifests", str(tmp_path), "--port", "7001"]).port == 7001
