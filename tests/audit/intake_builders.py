"""Builders of hostile input files for the intake tests: crafted skops trees, bombs, mutations.

Every file is built in the test's temporary folder and stays small on disk.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
TRUSTAUDIT = ROOT / ".venv" / "bin" / "trustaudit"
FEATURES3 = ["f0", "f1", "f2"]


def small_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = ((X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return pd.DataFrame({"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2],
                         "sex": np.where(rng.random(n) < 0.5, "female", "male"), "y": y})


def write_data(tmp: Path, n: int = 300) -> Path:
    p = tmp / "data.csv"
    small_frame(n).to_csv(p, index=False)
    return p


def skops_bytes(est: Any) -> bytes:
    import skops.io as sio

    return sio.dumps(est)


def _find(obj: Any, cls: str, out: list[dict]) -> None:
    if isinstance(obj, dict):
        if obj.get("__class__") == cls:
            out.append(obj)
        for v in obj.values():
            _find(v, cls, out)
    elif isinstance(obj, list):
        for v in obj:
            _find(v, cls, out)


def rewrite_zip(data: bytes, replace: dict[str, bytes], *, compress: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A copy of a zip with some members' bytes replaced (others kept as they were)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
    return buf.getvalue()


def edit_skops_array(data: bytes, cls: str, key: str, edit: Callable[[np.ndarray], None], which: int = 0) -> bytes:
    """Edit the array ``key`` of the ``which``-th object of class ``cls`` in a skops file."""
    z = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(z.read("schema.json"))
    found: list[dict] = []
    _find(schema, cls, found)
    node = found[which]
    state = node["content"]["content"]
    member = state[key]["file"]
    arr = np.load(io.BytesIO(z.read(member)), allow_pickle=False)
    edit(arr)
    out = io.BytesIO()
    np.save(out, arr, allow_pickle=False)
    return rewrite_zip(data, {member: out.getvalue()})


def edit_skops_json(data: bytes, cls: str, key: str, value: str, which: int = 0) -> bytes:
    z = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(z.read("schema.json"))
    found: list[dict] = []
    _find(schema, cls, found)
    node = found[which]["content"]["content"][key]
    node["content"] = value
    node["__id__"] = 987654321  # skops shares nodes by id (a small int may be n_features's too)
    return rewrite_zip(data, {"schema.json": json.dumps(schema).encode()})


def deflate_member_stream(zf: zipfile.ZipFile, name: str, total: int, chunk: bytes = b" " * (1 << 20),
                          prefix: bytes = b"") -> None:
    """Write a member of ``total`` bytes (prefix + repeated chunk) streamed: small in memory."""
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as w:
        w.write(prefix)
        left = total - len(prefix)
        while left > 0:
            piece = chunk[: min(len(chunk), left)]
            w.write(piece)
            left -= len(piece)


_RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(p.returncode if p.returncode >= 0 else 128 - p.returncode)\n"
)


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300
            ) -> tuple[int, str, str, int]:
    """Run the trustaudit console script; returns (exit code, stdout, stderr, peak RSS in bytes).

    Linux carries a process's peak RSS across fork and exec, so a child started straight from
    this (large) test process would report this process's peak. A small Python probe starts the
    console script instead and reads its grandchild's peak with RUSAGE_CHILDREN. A signal in the
    console script comes back as exit code 128 + signal (as a shell reports it).
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryDirectory() as d:
        rss_file = Path(d) / "rss"
        proc = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(rss_file), str(TRUSTAUDIT), *args],
                              capture_output=True, env=full_env, cwd=str(ROOT), timeout=timeout)
        rss = int(rss_file.read_text()) * 1024 if rss_file.exists() else -1
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), rss


def audit_cli_args(model: Path, data: Path, *extra: str) -> list[str]:
    return ["audit", "--model", str(model), "--data", str(data), "--target", "y", "--positive-label", "1",
            "--sensitive", "sex", "--checks", "fairness", "--quiet", "--no-store", *extra]

