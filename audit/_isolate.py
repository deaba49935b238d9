"""Run code that touches an untrusted model in a child process, so a crash cannot take the caller.

Native thread pools (OpenMP, BLAS) run with one thread in the child: libgomp's pool does not
survive ``fork``. A model file is data, but the code that runs it (scikit-learn's Cython trees, onnxruntime,
TorchScript) trusts the arrays it reads. Validation on load (:mod:`audit._treecheck`) refuses the
crafted structures we know of; :func:`run_isolated` is the second wall: the work runs in a forked
child (``fork`` on Linux, ``spawn`` elsewhere) with an optional address-space limit and timeout, and
a child killed by a signal (SIGSEGV, SIGBUS, SIGKILL from the OOM killer...), out of memory or too
slow becomes a :class:`~audit.exceptions.ModelError` with one line in the caller.

The result crosses back as JSON plus raw array bytes (shape and dtype in the JSON): the parent
never unpickles anything the child produced, since the child ran code chosen by the model file.
Results may hold ``dict`` (string keys), ``list``/``tuple``, ``str``, ``int``, ``float``, ``bool``,
``None``, numpy scalars and numpy arrays of numbers, booleans or fixed-width strings.

An exception raised in the child comes back as the same :class:`~audit.exceptions.TrustAuditError`
subclass when it is one, ``MemoryError`` as a ModelError naming the limit, anything else as
:class:`IsolatedError` (a ``RuntimeError`` whose text is ``"<TypeName>: <message>"``).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from audit import exceptions as _exc
from audit.exceptions import ModelError

__all__ = [
    "MSG_CRASHED",
    "MSG_EXITED",
    "MSG_OUT_OF_MEMORY",
    "MSG_OUT_OF_MEMORY_LIMIT",
    "MSG_TIMEOUT",
    "IsolatedError",
    "decode_result",
    "default_memory_limit",
    "encode_result",
    "fork_safe_native_threads",
    "run_isolated",
    "send_message",
]

#: the pipe to the parent, in a child started by run_isolated (None elsewhere)
_PARENT_CONN: Any = None

MSG_CRASHED = "the model crashed the {what} process ({signal})"
MSG_EXITED = "the {what} process exited with code {code} without a result"
MSG_OUT_OF_MEMORY = "the model ran out of memory in the {what} process"
MSG_OUT_OF_MEMORY_LIMIT = "the model ran out of memory in the {what} process (limit: {limit_mib} MiB above its start)"
MSG_TIMEOUT = "the {what} process did not finish within {seconds:g} s and was stopped"

_ARRAY_KINDS = "biufcUS"
_TAG = "__ndarray__"
_MAX_HEADER_BYTES = 64 * 1024**2


class IsolatedError(RuntimeError):
    """A non-trustaudit exception raised in the child: ``"<TypeName>: <message>"``."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message


# --- the wire format: JSON + raw buffers ----------------------------------------------------


def encode_result(obj: Any) -> tuple[bytes, list[bytes]]:
    """``obj`` -> (JSON header, raw array buffers). Raises TypeError for anything else."""
    buffers: list[bytes] = []

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            return x
        if isinstance(x, np.generic):
            if x.dtype.kind not in _ARRAY_KINDS:
                raise TypeError(f"cannot send a numpy scalar of dtype {x.dtype}")
            return enc(x.item())
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in _ARRAY_KINDS or x.dtype.hasobject or x.dtype.fields is not None:
                raise TypeError(f"cannot send a numpy array of dtype {x.dtype}")
            a = np.ascontiguousarray(x)
            buffers.append(a.tobytes())
            return {_TAG: len(buffers) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, (list, tuple)):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if not isinstance(k, str):
                    raise TypeError(f"dict keys must be strings, got {type(k).__name__}")
                if k == _TAG:
                    raise TypeError(f"the key {_TAG!r} is reserved")
                out[k] = enc(v)
            return out
        raise TypeError(f"cannot send a {type(x).__name__} from the child process")

    header = json.dumps({"ok": enc(obj), "buffers": [len(b) for b in buffers]}).encode()
    return header, buffers


def decode_result(header: bytes, buffers: list[bytes]) -> Any:
    """The inverse of :func:`encode_result`; validates every array against its buffer."""
    msg = json.loads(header.decode("utf-8"))

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if isinstance(x, dict):
            if _TAG in x:
                dtype = np.dtype(str(x["dtype"]))
                if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
                    raise ValueError(f"refused array dtype {dtype}")
                shape = tuple(int(s) for s in x["shape"])
                if any(s < 0 for s in shape):
                    raise ValueError(f"bad array shape {shape}")
                buf = buffers[int(x[_TAG])]
                if math.prod(shape) * dtype.itemsize != len(buf):
                    raise ValueError("array bytes do not match its shape and dtype")
                return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
            return {k: dec(v) for k, v in x.items()}
        return x

    return dec(msg["ok"])


# --- the child -------------------------------------------------------------------------------


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def send_message(obj: Any) -> None:
    """From code running in a run_isolated child: send a JSON-able message (say a progress event)
    to the parent's ``on_message``. Does nothing outside such a child."""
    if _PARENT_CONN is not None:
        _PARENT_CONN.send_bytes(json.dumps({"message": obj}).encode("utf-8"))


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this child if its parent dies (prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):  # pragma: no cover
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no libc symbol: the parent still kills it
        pass


def default_memory_limit(share: float = 0.6) -> int | None:
    """Bytes an audit's child process may add: ``share`` of this machine's physical memory."""
    try:
        return int(share * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def fork_safe_native_threads() -> int | None:
    """The ``native_threads`` a forked child may use: no limit (None) when this process has a
    single OS thread (no OpenMP or BLAS worker exists yet, so a fork copies no pool), else 1 —
    libgomp's pool does not survive fork and a parallel region in the child would wait forever."""
    try:
        return None if len(os.listdir("/proc/self/task")) == 1 else 1
    except OSError:  # pragma: no cover - not Linux
        return 1


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict, memory_bytes: int | None,
           native_threads: int | None = 1, stderr_fd: int | None = None) -> None:
    import faulthandler

    global _PARENT_CONN
    _PARENT_CONN = conn
    if stderr_fd is not None:
        # what native code writes (an abort's message, a library's log line) goes to the parent's
        # temporary file, not to the user's terminal: the parent relays it only when the work
        # succeeded, so a failure stays one line
        sys.stderr.flush()
        os.dup2(stderr_fd, 2)
    _die_with_parent()
    # a crash is reported by the parent in one line; no C-level traceback dump from the child
    faulthandler.disable()
    try:
        if native_threads is not None:
            # OpenMP (libgomp) thread pools do not survive fork: a parallel region in the child
            # would wait forever for the parent's workers (fork_safe_native_threads)
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=native_threads)
            torch = sys.modules.get("torch")
            if torch is not None:
                # torch links its own OpenMP and MKL, out of threadpoolctl's sight: its matrix
                # products would wait for the parent's pool too
                torch.set_num_threads(native_threads)
        if memory_bytes is not None:
            import resource

            limit = _vm_bytes() + int(memory_bytes)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        result = fn(*args, **kwargs)
        header, buffers = encode_result(result)
    except MemoryError:
        header, buffers = json.dumps({"error": "MemoryError", "message": ""}).encode(), []
    except BaseException as exc:  # noqa: BLE001 - everything goes back as text
        if not isinstance(exc, _exc.TrustAuditError) and os.environ.get("TRUSTAUDIT_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        header = json.dumps({"error": type(exc).__name__, "message": " ".join(str(exc).split())[:2000],
                             "trustaudit": isinstance(exc, _exc.TrustAuditError)}).encode()
        buffers = []
    try:
        conn.send_bytes(header)
        for b in buffers:
            conn.send_bytes(b)
    finally:
        conn.close()


def _context() -> Any:
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return mp.get_context(method)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_isolated(
    fn: Callable[..., Any],
    *args: Any,
    what: str = "inference",
    timeout: float | None = None,
    memory_bytes: int | None = None,
    max_result_bytes: int = 4 * 1024**3,
    native_threads: int | None = 1,
    on_message: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` in a child process and return its (JSON-able) result.

    ``timeout`` (seconds) stops the child; ``memory_bytes`` caps the child's address space at
    what it inherited plus this much (``RLIMIT_AS``). ``what`` names the work in messages.
    ``native_threads`` caps OpenMP/BLAS threads in the child (None: no cap; see
    :func:`fork_safe_native_threads`). Messages the child sends with :func:`send_message` reach
    ``on_message`` while it runs.
    """
    import tempfile

    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    err_file = tempfile.TemporaryFile()
    # not a daemon: the child may start processes of its own (the forked TreeSHAP share); it is
    # killed when this call ends, and asks the kernel to kill it if this process dies first
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs, memory_bytes, native_threads, err_file.fileno()),
                       daemon=False)
    proc.start()
    send.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = False
    try:
        while True:
            header = _recv(recv, proc, deadline, timeout, what, _MAX_HEADER_BYTES)
            if header is None or not header.startswith(b'{"message": '):
                break
            if on_message is not None:
                on_message(json.loads(header.decode("utf-8"))["message"])
        if header is None:
            proc.join()
            code = proc.exitcode
            if code is not None and code < 0:
                raise ModelError(MSG_CRASHED.format(what=what, signal=_signal_name(code)))
            raise ModelError(MSG_EXITED.format(what=what, code=code))
        msg = json.loads(header.decode("utf-8"))
        if "error" in msg:
            _raise_child_error(msg, what, memory_bytes)
        buffers = []
        total = 0
        for n in msg["buffers"]:
            total += int(n)
            if total > max_result_bytes:
                raise ModelError(f"the {what} process returned more than {max_result_bytes} bytes")
            buf = _recv(recv, proc, deadline, timeout, what, int(n) + 1)
            if buf is None:
                raise ModelError(MSG_EXITED.format(what=what, code=proc.exitcode))
            buffers.append(buf)
        result = decode_result(header, buffers)
        ok = True
        return result
    finally:
        recv.close()
        if proc.is_alive() and not ok:
            proc.kill()
        proc.join(timeout=30 if ok else 5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        if ok or os.environ.get("TRUSTAUDIT_DEBUG") == "1":
            _relay(err_file)  # after the child has exited: everything it printed is in the file
        err_file.close()


def _relay(err_file: Any) -> None:
    """Write what the child printed on stderr (warnings, say) to this process's stderr."""
    err_file.flush()
    err_file.seek(0)
    text = err_file.read().decode("utf-8", "replace")
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()


def _recv(conn: Any, proc: Any, deadline: float | None, timeout: float | None, what: str,
          maxlength: int) -> bytes | None:
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not conn.poll(remaining):
        proc.kill()
        proc.join()
        raise ModelError(MSG_TIMEOUT.format(what=what, seconds=timeout))
    try:
        return conn.recv_bytes(maxlength)
    except EOFError:
        return None
    except OSError:
        # a message longer than announced: the child is not following the protocol
        raise ModelError(f"the {what} process sent a malformed result") from None


def _raise_child_error(msg: dict[str, Any], what: str, memory_bytes: int | None) -> None:
    name = str(msg.get("error"))
    text = str(msg.get("message", ""))
    if name == "MemoryError":
        if memory_bytes is None:
            raise ModelError(MSG_OUT_OF_MEMORY.format(what=what))
        raise ModelError(MSG_OUT_OF_MEMORY_LIMIT.format(what=what, limit_mib=int(memory_bytes) // 1024**2))
    if msg.get("trustaudit"):
        cls = getattr(_exc, name, None)
        if isinstance(cls, type) and issubclass(cls, _exc.TrustAuditError):
            try:
                err = cls(text)
            except TypeError:  # a subclass with another signature: keep the message and exit code
                err = _exc.TrustAuditError(text)
            raise err
    raise IsolatedError(name, text)
