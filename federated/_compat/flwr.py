"""Flower: the in-memory link state's message lookup, indexed by destination node.

What it bypasses: ``InMemoryLinkState.get_message_ins`` (Flower 1.42), replaced on the class for
the duration of a simulation by :func:`indexed_get_message_ins`, which uses the private
``_check_stored_messages``, ``message_ins_store`` and ``lock``. The simulation engine's message
extractor asks every node for its next message ten times a second, and Flower's method answers
each ask by validating stored messages from the start of the store (every one, for a node with
nothing pending) under the state's lock: O(nodes × messages) per sweep, holding the lock and the
GIL the clients' replies and the ServerApp need. The replacement validates only the asking node's
undelivered messages (the same checks, in the same order, the same messages returned) and leaves
Flower's code as it is otherwise.

When: only for federations of at least :data:`MIN_CLIENTS` simulated clients — below that the
sweep is cheap and the replacement gains nothing measurable (bench/bench_compat.py, section
``flwr``, measures both the sweep and whole simulations at several client counts).

Re-entrancy: the replacement lives on the class, so it is process-wide. Simulations running at
once on several threads (the dashboard) share it: a module lock and a count of the simulations
using it install it for the first and restore the method found then only when the last one
leaves. A concurrent simulation below the threshold is served by it too, which is harmless (the
same messages are returned).

Off switch: ``TRUSTAUDIT_COMPAT_FLWR=0`` (or ``false``/``off``/``no``) — Flower's own method
stays, as it does when the installed Flower is outside ``SUPPORTED`` or a name the replacement
relies on is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from audit._compat import _gate

__all__ = ["MIN_CLIENTS", "SUPPORTED", "enabled", "indexed_get_message_ins", "indexed_message_ins",
           "installed_version"]

#: Flower versions the replacement was written and tested against: lower <= version < upper
SUPPORTED = ("1.42", "1.43")

#: The smallest federation for which the replacement is installed (see the module docstring).
MIN_CLIENTS = 200

_LOCK = threading.Lock()
_USERS = 0
_ORIGINAL: Any = None


def installed_version() -> str | None:
    return _gate.installed_version("flwr")


def enabled() -> bool:
    """The replacement may be used: the switch is on and Flower is in ``SUPPORTED``."""
    return _gate.enabled("flwr", installed_version(), SUPPORTED)


def indexed_get_message_ins(self: Any, node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Any]:
    """``InMemoryLinkState.get_message_ins`` validating only ``node_id``'s undelivered messages.

    Flower's version runs ``_check_stored_messages`` on every stored message it passes for every
    asking node. Here the candidates are picked by destination and delivery first (two attribute
    reads), then validated exactly as Flower does (expiry, federation membership; invalid ones
    deleted), in insertion order, up to ``limit``, and marked delivered. Other nodes' messages are
    validated when those nodes ask (every node asks in every sweep of the simulation engine).
    """
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Any] = []
    with self.lock:
        candidates = [mid for mid, m in self.message_ins_store.items()
                      if (md := m.metadata).dst_node_id == node_id and md.delivered_at == ""]
        for mid in candidates:
            self._check_stored_messages({mid})
            msg = self.message_ins_store.get(mid)
            if msg is not None and (run_id is None or msg.metadata.run_id == run_id):
                found.append(msg)
            if limit and len(found) == limit:
                break
    delivered_at = _flwr_now().isoformat()
    for msg in found:
        msg.metadata.delivered_at = delivered_at
    return found


def _flwr_now() -> Any:
    from flwr.supercore.date import now

    return now()


def _link_state_class() -> Any:
    """Flower's InMemoryLinkState if everything the replacement touches is there, else None.

    An exception inside the engine's extractor thread would stall the run silently, so the names
    are checked before the replacement is installed.
    """
    try:
        from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

        _flwr_now()
    except (ImportError, AttributeError):
        return None
    if not callable(getattr(InMemoryLinkState, "_check_stored_messages", None)):
        return None
    if not callable(getattr(InMemoryLinkState, "get_message_ins", None)):
        return None
    return InMemoryLinkState


@contextmanager
def indexed_message_ins(num_nodes: int) -> Iterator[bool]:
    """Use :func:`indexed_get_message_ins` in Flower's in-memory link state for the duration.

    Yields whether it is in use (the run record says so): only with the switch on, a supported
    Flower and at least :data:`MIN_CLIENTS` nodes. Safe to enter from several threads at once.
    """
    cls = _link_state_class() if num_nodes >= MIN_CLIENTS and enabled() else None
    if cls is None:
        yield False
        return
    global _USERS, _ORIGINAL
    with _LOCK:
        if _USERS == 0:
            _ORIGINAL = cls.__dict__.get("get_message_ins", cls.get_message_ins)
            cls.get_message_ins = indexed_get_message_ins
        _USERS += 1
    try:
        yield True
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                cls.get_message_ins = _ORIGINAL
                _ORIGINAL = None
