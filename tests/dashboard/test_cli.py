"""``trustaudit dashboard``: flags validated (exit 2, one line), Streamlit started with them."""

from __future__ import annotations

import sys

import pytest

from audit.cli import main
from dashboard import APP_PATH, DashboardSettings


@pytest.fixture
def launched(monkeypatch):
    calls = []

    def fake_launch(cmd, env):
        calls.append((cmd, env))
        return 0

    monkeypatch.setattr("dashboard.cli_commands._launch", fake_launch)
    return calls


def _opt(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_dashboard_starts_streamlit_with_the_settings(tmp_path, launched, capsys):
    rc = main(["dashboard", "--port", "8600", "--data-dir", str(tmp_path / "d"), "--max-upload-mb", "7",
               "--unsafe-pickle", "--store", str(tmp_path / "h.sqlite")])
    assert rc == 0
    (cmd, env), = launched
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    assert (_opt(cmd, "--server.port"), _opt(cmd, "--server.maxUploadSize"), _opt(cmd, "--server.headless"),
            _opt(cmd, "--server.address")) == ("8600", "7", "true", "localhost")
    assert _opt(cmd, "--client.showErrorDetails") == "none"
    settings = DashboardSettings.from_env(env)
    assert settings == DashboardSettings(tmp_path / "d", 7, True, tmp_path / "h.sqlite")
    assert (tmp_path / "d").is_dir()
    assert "pickle ALLOWED" in capsys.readouterr().err


def test_defaults_refuse_pickle(tmp_path, launched, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["dashboard"]) == 0
    (cmd, env), = launched
    settings = DashboardSettings.from_env(env)
    assert not settings.allow_unsafe_pickle and settings.max_upload_mb == 200
    assert settings.data_dir == tmp_path / "trustaudit" / "dashboard"
    assert _opt(cmd, "--server.port") == "8501"


@pytest.mark.parametrize("argv, message", [
    (["--port", "0"], "--port must be a TCP port from 1 to 65535; got 0"),
    (["--port", "70000"], "--port must be a TCP port from 1 to 65535; got 70000"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a whole number of megabytes from 1 to 4096; got 0"),
    (["--max-upload-mb", "lots"], "dashboard: argument --max-upload-mb: invalid int value: 'lots'"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, launched, capsys):
    assert main(["dashboard", *argv]) == 2
    assert capsys.readouterr().err == f"trustaudit: error: {message}\n"
    assert not launched


def test_data_dir_that_is_a_file(tmp_path, launched, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["dashboard", "--data-dir", str(f)]) == 2
    assert capsys.readouterr().err == (f"trustaudit: error: --data-dir {f} is a file; give a folder for the "
                                       "dashboard's uploads\n")


def test_settings_from_a_bad_environment():
    from audit.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"^max-upload-mb must be a whole number of megabytes from 1 to 4096; "
                                          r"got '9999'$"):
        DashboardSettings.from_env({"TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB": "9999"})
