"""The federated side's compatibility modules (federated._compat) and the torch thread setting:
the indexed Flower lookup returns Flower's messages, is installed only where it pays, survives
simulations on several threads, and importing the torch side changes no global setting."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("flwr")

from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState  # noqa: E402

from federated._compat import flwr as compat_flwr  # noqa: E402


def _federation(num_nodes: int, num_messages: int, expired: tuple[int, ...] = ()):
    """An in-memory link state set up as Flower's simulation loop sets it up, messages pushed."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.supercore.task_identity import TaskIdentity

    rs = importlib.import_module("flwr.simulation.run_simulation")  # the module, not the function
    factory = rs.LinkStateFactory(rs.FLWR_IN_MEMORY_DB_NAME, rs.NoOpFederationManager(), rs.ObjectStoreFactory())
    state = factory.state()
    run = rs.Run.create_empty(run_id=rs.generate_rand_int_from_bytes(rs.RUN_ID_NUM_BYTES))
    run.primary_task_id = rs.generate_rand_int_from_bytes(rs.TASK_ID_NUM_BYTES)
    run.federation_id = rs.NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, rs.SUPERLINK_NODE_ID
    state.run_ids[run.run_id] = rs.RunRecord(run=run)
    state.task_store[run.primary_task_id] = rs.Task(task_id=run.primary_task_id, run_id=run.run_id)
    nodes = sorted(_register_nodes(num_nodes=num_nodes, state_factory=factory))
    grid = rs.InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    msgs = [Message(RecordDict({"c": ConfigRecord({"k": k})}), dst_node_id=nodes[(3 * k) % num_nodes],
                    message_type=MessageType.QUERY, ttl=1e-9 if k in expired else None)
            for k in range(num_messages)]  # nodes interleaved, several messages per node
    grid.push_messages(msgs)
    return state, nodes


def _drain(state, nodes, fn, limit=1, sweeps=4):
    rank = {n: i for i, n in enumerate(nodes)}
    out = []
    for _ in range(sweeps):
        got = []
        for n in nodes:
            got += [(rank[n], int(m.content.config_records["c"]["k"])) for m in fn(state, n, limit)]
        out.append(got)
    return out


@pytest.mark.parametrize("limit", [1, 2, None])
def test_indexed_lookup_returns_flowers_messages_in_flowers_order(limit):
    """Each node gets the same messages, in the same order and sweeps, as from Flower's own
    ``get_message_ins``; expired messages are dropped by both."""
    a, nodes_a = _federation(5, 12, expired=(2, 7))
    b, nodes_b = _federation(5, 12, expired=(2, 7))
    want = _drain(a, nodes_a, lambda s, n, lim: InMemoryLinkState.get_message_ins(s, node_id=n, limit=lim), limit)
    got = _drain(b, nodes_b, lambda s, n, lim: compat_flwr.indexed_get_message_ins(s, n, lim), limit)
    assert want == got
    assert sum(len(sw) for sw in got) == 10 and not got[-1]  # 12 sent, 2 expired, all delivered once
    assert all(k not in (2, 7) for sw in got for _, k in sw)
    assert len(a.message_ins_store) == len(b.message_ins_store) == 10  # the expired ones deleted by both


def test_indexed_lookup_marks_delivery_and_refuses_a_bad_limit():
    state, nodes = _federation(4, 3)  # one message each for three of the nodes
    (msg,) = compat_flwr.indexed_get_message_ins(state, nodes[0], 1)
    assert msg.metadata.delivered_at != ""
    assert compat_flwr.indexed_get_message_ins(state, nodes[0], 1) == []
    with pytest.raises(AssertionError, match="limit"):
        compat_flwr.indexed_get_message_ins(state, nodes[0], 0)


def test_installed_only_from_the_threshold_and_with_the_switch_on(monkeypatch):
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR", raising=False)
    original = InMemoryLinkState.get_message_ins
    with compat_flwr.indexed_message_ins(compat_flwr.MIN_CLIENTS - 1) as used:
        assert not used and InMemoryLinkState.get_message_ins is original
    with compat_flwr.indexed_message_ins(compat_flwr.MIN_CLIENTS) as used:
        assert used and InMemoryLinkState.get_message_ins is compat_flwr.indexed_get_message_ins
    assert InMemoryLinkState.get_message_ins is original
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_FLWR", "0")
    with compat_flwr.indexed_message_ins(10 * compat_flwr.MIN_CLIENTS) as used:
        assert not used and InMemoryLinkState.get_message_ins is original
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR")
    monkeypatch.setattr(compat_flwr, "installed_version", lambda: "1.43.0")
    with compat_flwr.indexed_message_ins(10 * compat_flwr.MIN_CLIENTS) as used:
        assert not used and InMemoryLinkState.get_message_ins is original


def test_a_missing_flower_name_keeps_flowers_method(monkeypatch):
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR", raising=False)
    monkeypatch.delattr(InMemoryLinkState, "_check_stored_messages")
    original = InMemoryLinkState.get_message_ins
    with compat_flwr.indexed_message_ins(10 * compat_flwr.MIN_CLIENTS) as used:
        assert not used and InMemoryLinkState.get_message_ins is original


def test_overlapping_simulations_on_threads_restore_flowers_method_when_the_last_leaves(monkeypatch):
    """A enters, B enters, A leaves (B still served by the replacement), B leaves: Flower's method
    is back — the interleaving that left the replacement installed for good before."""
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR", raising=False)
    original = InMemoryLinkState.get_message_ins
    n = compat_flwr.MIN_CLIENTS
    a_in, b_in, a_out, b_may_leave = (threading.Event() for _ in range(4))
    seen: dict[str, object] = {}

    def sim_a():
        with compat_flwr.indexed_message_ins(n) as used:
            seen["a"] = used
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def sim_b():
        a_in.wait(10)
        with compat_flwr.indexed_message_ins(n) as used:
            seen["b"] = used
            b_in.set()
            a_out.wait(10)
            seen["b_after_a"] = InMemoryLinkState.get_message_ins
            b_may_leave.wait(10)

    threads = [threading.Thread(target=sim_a), threading.Thread(target=sim_b)]
    for t in threads:
        t.start()
    a_out.wait(10)
    b_may_leave.set()
    for t in threads:
        t.join(10)
    assert seen["a"] and seen["b"]
    assert seen["b_after_a"] is compat_flwr.indexed_get_message_ins
    assert InMemoryLinkState.get_message_ins is original


def test_many_threads_entering_and_leaving_restore_flowers_method(monkeypatch):
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR", raising=False)
    original = InMemoryLinkState.get_message_ins
    errors = []
    start = threading.Barrier(8)

    def sim(k):
        try:
            start.wait(10)
            for _ in range(50):
                with compat_flwr.indexed_message_ins(compat_flwr.MIN_CLIENTS + k) as used:
                    assert used and InMemoryLinkState.get_message_ins is compat_flwr.indexed_get_message_ins
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=sim, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and InMemoryLinkState.get_message_ins is original


def test_an_exception_inside_the_simulation_restores_flowers_method(monkeypatch):
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_FLWR", raising=False)
    original = InMemoryLinkState.get_message_ins
    with pytest.raises(RuntimeError, match="engine"), compat_flwr.indexed_message_ins(compat_flwr.MIN_CLIENTS):
        raise RuntimeError("engine failed")
    assert InMemoryLinkState.get_message_ins is original


# --- torch: one thread per simulated client, no import-time change ------------------------


def test_importing_the_torch_side_leaves_torch_threads_unchanged():
    code = ("import torch\n"
            "torch.set_num_threads(3); before = torch.get_num_threads()\n"
            "import federated._torch, federated.client_app, federated._engine, federated._compat.flwr\n"
            "print(before, torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["3", "3"]


def test_client_handlers_train_on_one_thread_and_restore_the_setting():
    import torch

    from federated._torch import one_thread
    from federated.client_app import _one_torch_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inside = _one_torch_thread(lambda msg, context: torch.get_num_threads())(None, None)
        assert inside == 1 and torch.get_num_threads() == 2
        with one_thread():
            with one_thread():
                assert torch.get_num_threads() == 1
            assert torch.get_num_threads() == 1  # the outer user is still there
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError), one_thread():
            raise ValueError("a failing fit")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_one_thread_on_overlapping_threads_leaves_no_setting_changed():
    """A enters, B enters, A leaves, B leaves (the interleaving where a plain save-and-restore
    leaves one thread behind): each runs on one thread, and afterwards this thread and a thread
    started later see the value from before."""
    import torch

    from federated._torch import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with one_thread():
            seen["a"] = torch.get_num_threads()
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with one_thread():
            seen["b"] = torch.get_num_threads()
            b_in.set()
            a_out.wait(10)

    try:
        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        later = threading.Thread(target=lambda: seen.update(later=torch.get_num_threads()))
        later.start()
        later.join(10)
        assert seen == {"a": 1, "b": 1, "later": 2} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
