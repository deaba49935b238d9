"""``trustaudit dashboard``: flags validated (exit 2, one line), the store checked first, local
workers started for the dashboard's store and jobs folder (unless ``--no-worker``), Streamlit
started with the settings; and (one real run) the workers it starts run a submitted audit."""

from __future__ import annotations

import os
import sys
import time
from typing import ClassVar

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


class FakeWorkers:
    started: ClassVar[list[FakeWorkers]] = []

    def __init__(self, store_url, n, **kwargs):
        self.store_url, self.n, self.kwargs = store_url, n, kwargs
        self.stopped = False

    def start(self):
        FakeWorkers.started.append(self)
        return self

    def stop(self):
        self.stopped = True


@pytest.fixture
def workers(monkeypatch, tmp_path):
    monkeypatch.setattr("audit.service.LocalWorkers", FakeWorkers)
    monkeypatch.setenv("TRUSTAUDIT_JOBS_DIR", str(tmp_path / "jobs"))
    FakeWorkers.started = []
    return FakeWorkers.started


def _opt(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_dashboard_starts_streamlit_and_its_workers_with_the_settings(tmp_path, launched, workers, capsys):
    rc = main(["dashboard", "--port", "8600", "--data-dir", str(tmp_path / "d"), "--max-upload-mb", "7",
               "--unsafe-pickle", "--store", str(tmp_path / "h.sqlite"), "--jobs-dir", str(tmp_path / "j"),
               "--workers", "2"])
    assert rc == 0
    (cmd, env), = launched
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    assert (_opt(cmd, "--server.port"), _opt(cmd, "--server.maxUploadSize"), _opt(cmd, "--server.headless"),
            _opt(cmd, "--server.address")) == ("8600", "7", "true", "localhost")
    assert _opt(cmd, "--client.showErrorDetails") == "none"
    settings = DashboardSettings.from_env(env)
    assert settings == DashboardSettings(tmp_path / "d", 7, True, str(tmp_path / "h.sqlite"), tmp_path / "j")
    assert (tmp_path / "d").is_dir()
    assert (tmp_path / "h.sqlite").is_file()  # the store was opened (and migrated) before anything started
    # the workers share the dashboard's store and jobs folder, and its pickle decision
    (w,) = workers
    assert (w.store_url, w.n, w.kwargs) == (str(tmp_path / "h.sqlite"), 2,
                                            {"jobs_dir": tmp_path / "j", "allow_unsafe_pickle": True})
    assert w.stopped  # stopped with the dashboard
    err = capsys.readouterr().err
    assert "pickle ALLOWED" in err and "2 local workers" in err


def test_defaults_refuse_pickle_and_start_one_worker(tmp_path, launched, workers, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.delenv("TRUSTAUDIT_JOBS_DIR")
    monkeypatch.delenv("TRUSTAUDIT_STORE")
    assert main(["dashboard"]) == 0
    (cmd, env), = launched
    settings = DashboardSettings.from_env(env)
    assert not settings.allow_unsafe_pickle and settings.max_upload_mb == 200
    assert settings.data_dir == tmp_path / "trustaudit" / "dashboard"
    # the workers' defaults, spelled out for Streamlit so that both sides meet
    assert settings.store == str(tmp_path / "trustaudit" / "history.sqlite")
    assert settings.jobs_dir == tmp_path / "trustaudit" / "jobs"
    assert _opt(cmd, "--server.port") == "8501"
    (w,) = workers
    assert (w.n, w.kwargs["jobs_dir"], w.kwargs["allow_unsafe_pickle"]) == (1, tmp_path / "trustaudit" / "jobs", False)


def test_no_worker_starts_none(tmp_path, launched, workers, capsys):
    assert main(["dashboard", "--no-worker", "--data-dir", str(tmp_path / "d")]) == 0
    assert launched and not workers
    assert "no local worker (run 'trustaudit worker')" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--port", "0"], "--port must be a TCP port from 1 to 65535; got 0"),
    (["--port", "70000"], "--port must be a TCP port from 1 to 65535; got 70000"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be a whole number of megabytes from 1 to 4096; got 0"),
    (["--max-upload-mb", "lots"], "dashboard: argument --max-upload-mb: invalid int value: 'lots'"),
    (["--workers", "0"], "--workers must be at least 1 (or give --no-worker); got 0"),
    (["--store", "mysql://u:secret@db/x"],
     "history store URL 'mysql://u:***@db/x': unknown scheme 'mysql'; use a file path, sqlite:///PATH or "
     "postgresql+psycopg://USER@HOST/DB"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, launched, workers, capsys):
    assert main(["dashboard", *argv]) == 2
    assert capsys.readouterr().err == f"trustaudit: error: {message}\n"
    assert not launched and not workers


def test_unreachable_database_exits_2_before_anything_starts(launched, workers, capsys):
    assert main(["dashboard", "--store", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trustaudit: error: ") and err.count("\n") == 1 and "127.0.0.1" in err
    assert not launched and not workers


@pytest.mark.parametrize("flag, message", [
    ("--data-dir", "--data-dir {f} is a file; give a folder for the dashboard's uploads"),
    ("--jobs-dir", "--jobs-dir {f} is a file; give a folder for the jobs' inputs"),
])
def test_folder_that_is_a_file(tmp_path, launched, workers, capsys, flag, message):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["dashboard", flag, str(f)]) == 2
    assert capsys.readouterr().err == f"trustaudit: error: {message.format(f=f)}\n"


def test_settings_from_a_bad_environment():
    from audit.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"^max-upload-mb must be a whole number of megabytes from 1 to 4096; "
                                          r"got '9999'$"):
        DashboardSettings.from_env({"TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB": "9999"})


def test_the_dashboards_own_workers_run_a_submitted_audit(tmp_path, monkeypatch, skops_model, test_csv):
    """Real LocalWorkers: while the (faked) Streamlit server runs, an audit submitted the way the
    New audit page submits it is run by the workers the command started; they stop with it."""
    from audit.store import open_store
    from dashboard._jobs import submit_audit

    seen = {}

    def fake_launch(cmd, env):
        settings = DashboardSettings.from_env(env)
        with open_store(settings.store_url) as store:
            spec = {"data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"]},
                    "checks": ["fairness.demographic_parity"], "seed": 3}
            job_id = submit_audit(store, settings, {"model": ("model.skops", skops_model),
                                                    "data": ("applicants.csv", test_csv)}, spec)
            deadline = time.monotonic() + 240
            while not store.get_job(job_id).finished and time.monotonic() < deadline:
                time.sleep(0.2)
            seen["job"] = store.get_job(job_id)
            seen["history"] = store.list()
        seen["pids"] = _children()
        return 0

    monkeypatch.setattr("dashboard.cli_commands._launch", fake_launch)
    rc = main(["dashboard", "--data-dir", str(tmp_path / "d"), "--store", str(tmp_path / "h.sqlite"),
               "--jobs-dir", str(tmp_path / "jobs")])
    assert rc == 0
    job = seen["job"]
    assert job.state == "succeeded", job.error
    assert [r["audit_id"] for r in seen["history"]] == [job.audit_id]
    assert seen["pids"]  # a worker process was running while the dashboard was
    for pid in seen["pids"]:  # and none is left once the dashboard stopped
        assert not _alive(pid)


def _children() -> list[int]:
    """The pids of this process's child processes (read from /proc)."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
