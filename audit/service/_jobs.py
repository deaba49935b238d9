"""How a job runs: its inputs from the job folder, its spec, then the audit or the federated simulation.

A job's uploaded inputs live in a **job folder** ``<jobs-dir>/<folder>/`` under generated names;
whoever submits the job (the HTTP API, the dashboard, a test) writes it before ``submit_job``
(:func:`stage_inputs` does both halves: writes the files and returns the ``inputs`` mapping).
The ``inputs`` mapping a job carries (the store's ``inputs_json``)::

    {"folder": "<name in the jobs folder>",            # default: the job id
     "model": {"stored": "model-<uuid>.upload",         # the file's generated name in the folder
               "name": "<the client's file name: shown, never opened>",
               "size": 1234, "sha256": "<hex>", "format": "auto", "trusted_types": [],
               "allow_unsafe_pickle": false},           # honoured only by a worker started with --unsafe-pickle
     "data": {"stored": ..., "name": ..., "sha256": ..., "na_values": ["?"]},   # the audited rows
     "train": {...}, "holdout": {...}}                  # optional

``folder`` and ``stored`` (``file`` is read as its synonym) must be plain generated names (letters, digits, ``._-``): a job never
names a path. A federated job's ``inputs`` hold at most ``data`` (its CSV; else the lending
generator) and its spec is the federated run config (``trustaudit federated simulate``'s settings).

Everything here that touches the model runs in the job's child process (``audit._isolate``): the
model file is loaded with the safe intake (``audit.io.load_model``, the CLI's; no unpickling
unless the *worker* was started with ``--unsafe-pickle``), the tables with ``audit.io.load_table``
(through ``run_audit``), and the result crosses back as JSON. Messages name the client's file
names, never the server's paths; so does the recorded report (``model.path``, ``data.*.path``).

With a Ray cluster (``worker --ray-address``) the same child runs inside a Ray task: the input
bytes travel with the task (:func:`ray_audit_task`), so the cluster's machines need no shared
filesystem, only the same trustaudit installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.exceptions import ConfigError, DataError, SpecError, TrustAuditError

__all__ = [
    "AUDIT_ROLES",
    "InputFile",
    "audit_in_child",
    "federated_job",
    "job_folder",
    "ray_audit_task",
    "remove_job_folder",
    "resolve_inputs",
    "run_audit_job",
    "stage_inputs",
    "sweep_trash",
]

#: the input roles of an audit job, as the API's multipart fields name them ("data": the audited rows)
AUDIT_ROLES = ("model", "data", "train", "holdout")
_ROLE_TO_SPLIT = {"data": "test", "train": "train", "holdout": "holdout"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_DISPLAY_MAX = 200


@dataclass(frozen=True)
class InputFile:
    """One input of a job: where it is on this machine, and what the client called it."""

    role: str
    path: Path
    name: str  # the client's file name (or the role): for messages and the report only
    sha256: str | None = None
    format: str = "auto"
    trusted_types: tuple[str, ...] = ()
    allow_unsafe_pickle: bool = False  # the submitter's side of the consent (the worker's flag is the other)

    def payload(self) -> dict[str, Any]:
        """The file's bytes and description, to ship with a Ray task."""
        return {"role": self.role, "name": self.name, "sha256": self.sha256, "format": self.format,
                "trusted_types": list(self.trusted_types), "allow_unsafe_pickle": self.allow_unsafe_pickle,
                "bytes": self.path.read_bytes()}


def _display(value: Any, default: str) -> str:
    """A client's file name as shown: one line, no folders, bounded."""
    if not isinstance(value, str) or not value.strip():
        return default
    name = " ".join(value.replace("\\", "/").rsplit("/", 1)[-1].split())
    return name[:_DISPLAY_MAX] or default


def _plain_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise SpecError(f"job inputs: {what} {value!r} is not a generated file name "
                        "(letters, digits, '.', '_' or '-'; no folders)")
    return value


def job_folder(jobs_dir: str | os.PathLike[str], job_id: str, inputs: Mapping[str, Any]) -> Path:
    """The job's folder inside ``jobs_dir`` (``inputs["folder"]``, else the job id)."""
    return Path(jobs_dir) / _plain_name(inputs.get("folder") or job_id, "folder")


def resolve_inputs(
    jobs_dir: str | os.PathLike[str], job_id: str, inputs: Mapping[str, Any], roles: tuple[str, ...] = AUDIT_ROLES,
    *, folder_wait: float = 2.0,
) -> dict[str, InputFile]:
    """The job's input files, checked: plain names inside its folder, regular files (no links).
    A folder that does not exist yet is waited for ``folder_wait`` seconds.

    Raises a one-line ``SpecError`` naming the role (never the server path) when one is missing or
    malformed. Content (format, size limits, sha256) is checked where it is read, in the child.
    """
    if not isinstance(inputs, Mapping):
        raise SpecError("job inputs must be a mapping of roles to files")
    unknown = sorted(k for k in inputs if k not in (*AUDIT_ROLES, "folder", "na_values"))
    if unknown:
        raise SpecError(f"job inputs: unknown role {unknown[0]!r}; allowed: {', '.join(roles)}")
    extra = sorted(k for k in AUDIT_ROLES if k not in roles and inputs.get(k) is not None)
    if extra:
        raise SpecError(f"job inputs: a {extra[0]} file is not used by this kind of job; allowed: {', '.join(roles)}")
    folder = job_folder(jobs_dir, job_id, inputs)
    deadline = time.monotonic() + folder_wait
    while not folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # a submitter may still be moving the folder into place
    out: dict[str, InputFile] = {}
    for role in roles:
        entry = inputs.get(role)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise SpecError(f"job inputs: {role} must be a mapping with a 'file' name")
        name = _display(entry.get("name"), role)
        path = folder / _plain_name(entry.get("stored") or entry.get("file"), f"{role} file")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise DataError(f"{role} file {name} of this job is missing from the job folder "
                            "(removed, or the worker does not share the server's jobs folder)") from None
        except OSError as exc:
            raise DataError(f"{role} file {name} of this job cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{role} file {name} of this job is not a regular file")
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _HEX64_RE.match(sha)):
            raise SpecError(f"job inputs: {role} sha256 must be 64 lowercase hex digits")
        fmt = entry.get("format") or "auto"
        trusted = entry.get("trusted_types") or ()
        if not isinstance(fmt, str) or not isinstance(trusted, (list, tuple)) or not all(
                isinstance(t, str) for t in trusted):
            raise SpecError(f"job inputs: {role} format must be a string and trusted_types a list of strings")
        out[role] = InputFile(role, path, name, sha, fmt, tuple(trusted), entry.get("allow_unsafe_pickle") is True)
    return out


def _na_values(inputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The missing-value markers of the job's tables: the data entry's, else the top level's, else "?"."""
    data = inputs.get("data")
    na = data.get("na_values") if isinstance(data, Mapping) and "na_values" in data else inputs.get("na_values", ("?",))
    if not isinstance(na, (list, tuple)) or not all(isinstance(x, str) for x in na) or len(na) > 100:
        raise SpecError("job inputs: na_values must be a list of at most 100 strings")
    return tuple(na)


def stage_inputs(
    jobs_dir: str | os.PathLike[str],
    files: Mapping[str, tuple[str, bytes | str | os.PathLike[str]]],
    *,
    na_values: tuple[str, ...] | list[str] | None = None,
    model_format: str = "auto",
    trusted_types: tuple[str, ...] | list[str] = (),
    allow_unsafe_pickle: bool = False,
) -> dict[str, Any]:
    """Write a job's input files into a new job folder; returns the ``inputs`` mapping for ``submit_job``.

    ``files`` maps a role ("model", "data", "train", "holdout") to ``(client file name, content)``,
    the content as bytes or the path of a file to copy. The files get generated names
    (``<role>-<random>.upload``); the client's name is kept for messages only. The folder is
    readable by its owner only. ``allow_unsafe_pickle``: the submitter accepts a pickle model (a
    worker runs it only when started with ``--unsafe-pickle`` too).
    """
    root = Path(jobs_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder_name = secrets.token_hex(16)
    folder = root / folder_name
    folder.mkdir(mode=0o700)
    inputs: dict[str, Any] = {"folder": folder_name}
    try:
        for role, (client_name, content) in files.items():
            if role not in AUDIT_ROLES:
                raise SpecError(f"job inputs: unknown role {role!r}; allowed: {', '.join(AUDIT_ROLES)}")
            stored = f"{role}-{secrets.token_hex(8)}.upload"
            path = folder / stored
            h = hashlib.sha256()
            with open(path, "xb") as out:
                if isinstance(content, bytes):
                    out.write(content)
                    h.update(content)
                else:
                    with open(content, "rb") as src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            out.write(chunk)
                            h.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            entry: dict[str, Any] = {"stored": stored, "name": _display(client_name, role),
                                     "size": path.stat().st_size, "sha256": h.hexdigest()}
            if role == "model":
                entry.update(format=model_format, trusted_types=list(trusted_types),
                             allow_unsafe_pickle=bool(allow_unsafe_pickle))
            elif na_values is not None:
                entry["na_values"] = list(na_values)
            inputs[role] = entry
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return inputs


_TRASH = ".trash-"  # a job folder being removed: renamed first, so no half-removed folder keeps its name


def remove_job_folder(jobs_dir: str | os.PathLike[str], job_id: str, inputs: Mapping[str, Any]) -> bool:
    """Delete the job's folder (after the job ended); False if there was none or its name is not plain.

    The folder is first renamed to ``.trash-<name>-<random>`` (one atomic step), then deleted: a
    process killed meanwhile leaves a trash folder (:func:`sweep_trash` removes it), never a job
    folder with some of its inputs gone."""
    try:
        folder = job_folder(jobs_dir, job_id, inputs if isinstance(inputs, Mapping) else {})
    except SpecError:
        return False
    if not folder.is_dir() or folder.is_symlink():
        return False
    trash = folder.with_name(f"{_TRASH}{folder.name}-{secrets.token_hex(4)}")
    try:
        os.rename(folder, trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def sweep_trash(jobs_dir: str | os.PathLike[str]) -> int:
    """Finish removing job folders whose removal was interrupted; returns how many."""
    n = 0
    try:
        entries = list(os.scandir(jobs_dir))
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(_TRASH) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            n += 1
    return n


# --- in the job's child process --------------------------------------------------------------


def _renamed(exc: TrustAuditError, files: Mapping[str, InputFile]) -> TrustAuditError:
    """The same error with the server's paths replaced by the client's file names."""
    msg = exc.message
    for f in files.values():
        msg = msg.replace(str(f.path), f.name)
    if msg == exc.message:
        return exc
    try:
        new = type(exc)(msg)
    except TypeError:  # a subclass with another signature
        new = TrustAuditError(msg)
        new.exit_code = exc.exit_code
    return new


def _check_sha(f: InputFile) -> None:
    if f.sha256 is None:
        return
    h = hashlib.sha256()
    with open(f.path, "rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != f.sha256:
        raise DataError(f"{f.role} file {f.name} of this job does not match its recorded sha256 "
                        "(changed after it was uploaded)")


def run_audit_job(
    files: Mapping[str, InputFile],
    spec: Mapping[str, Any],
    *,
    na_values: tuple[str, ...] = ("?",),
    allow_unsafe_pickle: bool = False,
    progress: Callable[[str, str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Load the inputs with the safe intake, build the spec, run the audit; the report as a dict.

    Runs in the job's child process. Bad input raises a one-line ``TrustAuditError`` naming the
    client's files; the report names them too (model and data ``path``), with their sha256.
    """
    from audit.io import load_model
    from audit.runner import run_audit
    from audit.spec import spec_from_mapping

    try:
        if "model" not in files:
            raise SpecError("no model: the job has no model file")
        if "data" not in files:
            raise SpecError("no audited data: the job has no data file")
        if not isinstance(spec, Mapping):
            raise SpecError("the job's spec must be a mapping (AuditSpec.to_dict())")
        audit_spec = spec_from_mapping(dict(spec), source="job spec")
        for f in files.values():
            _check_sha(f)
        m = files["model"]
        unsafe = allow_unsafe_pickle and m.allow_unsafe_pickle  # the worker's flag and the submitter's consent
        model = load_model(m.path, format=m.format, trusted_types=m.trusted_types, allow_unsafe_pickle=unsafe,
                           feature_names=tuple(audit_spec.data.features) or None)
        splits = {_ROLE_TO_SPLIT[r]: str(f.path) for r, f in files.items() if r in _ROLE_TO_SPLIT}
        report = run_audit(model, splits["test"], train=splits.get("train"), holdout=splits.get("holdout"),
                           spec=audit_spec, na_values=na_values, allow_unsafe_pickle=unsafe, progress=progress)
    except TrustAuditError as exc:
        raise _renamed(exc, files) from None
    d = report.to_dict()
    d["model"] = {**dict(d.get("model") or {}), "path": m.name}
    data = dict((d.get("inputs") or {}).get("data") or {})
    for role, split in _ROLE_TO_SPLIT.items():
        if role in files and split in data:
            data[split] = {**dict(data[split]), "path": files[role].name}
    d["inputs"] = {**dict(d.get("inputs") or {}), "data": data}
    return d


def audit_in_child(files: dict[str, InputFile], spec: dict[str, Any], na_values: tuple[str, ...],
                   allow_unsafe_pickle: bool) -> dict[str, Any]:
    """``run_isolated``'s target for an audit job: progress events go to the parent as messages."""
    from audit._isolate import send_message

    _child_setup()

    def progress(event: str, check_id: str, i: int, n: int) -> None:
        send_message({"event": event, "check": check_id, "done": i, "total": n})

    return {"report": run_audit_job(files, spec, na_values=na_values, allow_unsafe_pickle=allow_unsafe_pickle,
                                    progress=progress)}


def _child_setup(own_group: bool = False) -> None:
    """First thing in a job's child: tell the parent our pid (so it can stop us on cancel), take
    back the default SIGTERM (the worker's handler was copied by fork) and leave Ctrl-C to the
    worker, which decides whether the job finishes or is given back. ``own_group``: lead a process
    group of our own, so the worker can stop everything we start (a simulation's Ray processes)."""
    import signal

    from audit._isolate import send_message

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if own_group:
        os.setpgid(0, 0)
    send_message({"pid": os.getpid(), "group": own_group})


# --- federated jobs ---------------------------------------------------------------------------

_FED_REFUSED = ("data", "output-dir", "output_dir")


def federated_job(
    job_id: str,
    files: Mapping[str, InputFile],
    config: Mapping[str, Any],
    work_dir: str,
    *,
    ray_cpus: int | None = None,
) -> dict[str, Any]:
    """``trustaudit federated simulate`` as a job (in its child process): simulate, export the
    model, and audit it when the config asks (``audit = true``). Returns ``{"result": ..., "report": ...}``:
    the run's metrics (``FederatedRun.to_dict()``) and the audit report (or None).

    The run's files (model, metrics, run report) are written to ``work_dir``, a temporary folder
    the worker removes: a job's lasting output is its store record. Progress: one message per
    round, then one per check of the audit. The child leads its own process group: when the job
    is stopped (timeout, cancel), the worker stops the Ray processes the simulation started too.
    """
    from audit._isolate import send_message

    _child_setup(own_group=True)
    from federated._config import FederatedConfig
    from federated._data import load_run_data
    from federated._engine import simulate
    from federated._run import write_outputs
    from federated.export import audit_run

    if not isinstance(config, Mapping):
        raise ConfigError("the job's federated config must be a mapping of settings")
    named = [k for k in _FED_REFUSED if config.get(k)]
    if named:
        raise ConfigError(f"federated job config: {named[0]!r} cannot be set in a job (upload the data file; "
                          "the worker chooses where the run's files go)")
    raw = {k: v for k, v in config.items() if k not in _FED_REFUSED}
    if "data" in files:
        raw["data"] = str(files["data"].path)
    raw["output-dir"] = work_dir
    try:
        cfg = FederatedConfig.from_mapping(raw)
        if "data" in files:
            _check_sha(files["data"])
        load_run_data(cfg.data_setup_json())  # data and partition errors before the engine starts
    except TrustAuditError as exc:
        raise _renamed(exc, files) from None

    def on_round(pr: Any) -> None:
        send_message({"event": "round", "round": int(pr.round), "rounds": int(pr.num_rounds),
                      "accuracy": float(pr.accuracy) if pr.accuracy == pr.accuracy else None,
                      "answered": int(pr.answered), "sampled": int(pr.sampled)})

    run = simulate(cfg, ray_cpus=ray_cpus, progress=on_round)
    written = write_outputs(run, work_dir, audit=False)
    if not run.trained:
        raise ConfigError(run.untrained_message(None))
    shown = {str(f.path): f.name for f in files.values()}

    def scrub(value: Any) -> Any:  # the server's paths out of the recorded run: the client's names in
        if isinstance(value, str):
            return "" if value == work_dir or value.startswith(work_dir + os.sep) else shown.get(value, value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    result = {"run": scrub(run.to_dict()), "trained": True}
    report = None
    if cfg.audit:
        def progress(event: str, check_id: str, i: int, n: int) -> None:
            send_message({"event": event, "check": check_id, "done": i, "total": n, "stage": "audit"})

        rep = audit_run(run, written["model"], checks=cfg.audit_checks, progress=progress)
        report = rep.to_dict()
        label = f"federated job {job_id[:12]}"
        report["model"] = {**dict(report.get("model") or {}), "path": f"{label}: model.pt"}
        roles = {"test": "test rows", "train": "training rows (all clients)", "holdout": "holdout rows"}
        data = {role: {**dict(info), "path": f"{label}: {roles.get(role, role)}"}
                for role, info in dict((report.get("inputs") or {}).get("data") or {}).items()}
        report["inputs"] = {**dict(report.get("inputs") or {}), "data": data}
    return {"result": result, "report": report}


# --- on a Ray cluster -------------------------------------------------------------------------


def ray_audit_task(
    job_id: str,
    spec: dict[str, Any],
    payloads: list[dict[str, Any]],
    options: dict[str, Any],
    queue: Any = None,
) -> dict[str, Any]:
    """The body of the Ray task that audits one job on a cluster machine (``ray.remote`` is applied
    by the worker). The input bytes came with the task: they are written to a private temporary
    folder here, then the audit runs in a child process with the worker's time and memory limits,
    exactly as on the worker's own machine. Per-check progress goes to ``queue`` (a Ray queue the
    worker reads) as ``(job_id, message)``.

    Returns ``{"ok": {"report": ...}}`` or ``{"error": type name, "message": one line, "trustaudit": bool}``:
    plain data, never an exception object.
    """
    from audit._isolate import IsolatedError, default_memory_limit, fork_safe_native_threads, run_isolated

    def on_message(msg: Any) -> None:
        if queue is not None:
            try:
                queue.put_nowait((job_id, msg))
            except Exception:  # noqa: BLE001 - progress is best effort; the result still comes back
                pass

    with tempfile.TemporaryDirectory(prefix="trustaudit-job-") as tmp:
        files: dict[str, InputFile] = {}
        for p in payloads:
            role = str(p["role"])
            if role not in AUDIT_ROLES:
                return {"error": "SpecError", "message": f"job inputs: unknown role {role!r}", "trustaudit": True}
            path = Path(tmp) / role
            path.write_bytes(p["bytes"])
            files[role] = InputFile(role, path, _display(p.get("name"), role), p.get("sha256"),
                                    p.get("format") or "auto", tuple(p.get("trusted_types") or ()),
                                    p.get("allow_unsafe_pickle") is True)
        memory = options.get("memory_bytes")
        if memory == "default":  # 60 % of this machine's memory, as on the worker's own
            memory = default_memory_limit()
        try:
            out = run_isolated(audit_in_child, files, spec, tuple(options.get("na_values") or ("?",)),
                               bool(options.get("allow_unsafe_pickle")), what="audit",
                               timeout=options.get("timeout"), memory_bytes=memory,
                               native_threads=fork_safe_native_threads(), on_message=on_message)
        except TrustAuditError as exc:
            return {"error": type(exc).__name__, "message": exc.message, "trustaudit": True}
        except IsolatedError as exc:
            return {"error": exc.type_name, "message": exc.message, "trustaudit": False}
    return {"ok": out}
