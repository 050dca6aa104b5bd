"""PanelPublisher: the kernel side of the mpc_jupyter.panel comm, without a frontend."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from comm.base_comm import BaseComm

from mpc_jupyter.panel import COMM_TARGET, PanelPublisher, state_message


class RecordingComm(BaseComm):
    """A comm that records what it would put on the iopub channel."""

    instances: list[RecordingComm] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        self.sent: list[tuple[str, Any, dict[str, Any]]] = []
        RecordingComm.instances.append(self)
        super().__init__(**kwargs)

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any
    ) -> None:
        self.sent.append((msg_type, data, keys))

    def from_frontend(self, data: dict[str, Any]) -> None:
        self.handle_msg({"content": {"comm_id": self.comm_id, "data": data}})

    def close_from_frontend(self) -> None:
        self.handle_close({"content": {"comm_id": self.comm_id, "data": {}}})


@pytest.fixture(autouse=True)
def _fresh_instances() -> None:
    RecordingComm.instances.clear()


STATE: dict[str, Any] = {
    "consortium": {"name": "north-3", "analyst": "ana", "policy": {"min_group_size": 10}},
    "sites": [
        {"name": "st-olav", "address": "wss://olav:8443", "online": True, "latency_ms": 12.5,
         "policy_digest": "ab" * 32, "tables": ["patients"]},
        {"name": "haukeland", "online": False},
    ],
    "queries": [
        {"id": 1, "text": "SELECT COUNT(*) FROM patients", "seconds": 1.5, "sites": ["st-olav", "haukeland"],
         "receipts": [{"site": "st-olav", "digest": "cd" * 32}], "reveals": [{"name": "count", "rows": 1}],
         "suppressed": 0},
    ],
}


def test_state_message_shape() -> None:
    msg = state_message(STATE)
    assert msg["type"] == "state"
    assert set(msg) == {"type", "consortium", "sites", "queries"}
    assert msg["consortium"]["policy"] == {"min_group_size": 10}
    site_keys = {"name", "address", "online", "latency_ms", "policy_digest", "tables"}
    assert all(set(site) == site_keys for site in msg["sites"])
    assert msg["sites"][1] == {"name": "haukeland", "address": None, "online": False, "latency_ms": None,
                               "policy_digest": None, "tables": []}
    (query,) = msg["queries"]
    assert set(query) == {"id", "text", "seconds", "sites", "receipts", "reveals", "suppressed"}
    assert query["id"] == "1"  # ids are strings on the wire
    assert json.loads(json.dumps(msg)) == msg


def test_state_message_makes_values_json_safe_and_keeps_recent_queries() -> None:
    queries = [{"id": f"q{i}", "text": "SELECT 1", "seconds": np.float64(0.5), "suppressed": np.int64(2),
                "sites": ("a", "b")} for i in range(30)]
    msg = state_message({"queries": queries}, max_queries=5)
    assert [q["id"] for q in msg["queries"]] == ["q25", "q26", "q27", "q28", "q29"]
    assert msg["queries"][0]["seconds"] == 0.5 and type(msg["queries"][0]["seconds"]) is float
    assert msg["queries"][0]["suppressed"] == 2 and type(msg["queries"][0]["suppressed"]) is int
    assert msg["queries"][0]["sites"] == ["a", "b"]
    assert msg["consortium"] == {} and msg["sites"] == []


def test_state_message_rejects_unnamed_sites_and_queries_without_id() -> None:
    with pytest.raises(ValueError, match="site without a name"):
        state_message({"sites": [{"online": True}]})
    with pytest.raises(ValueError, match="query without an id"):
        state_message({"queries": [{"text": "SELECT 1"}]})


def test_first_publish_opens_the_comm_with_the_state_then_sends() -> None:
    publisher = PanelPublisher(comm_factory=RecordingComm)
    first = publisher.publish(STATE)
    (comm,) = RecordingComm.instances
    msg_type, data, keys = comm.sent[0]
    assert msg_type == "comm_open"
    assert keys["target_name"] == COMM_TARGET == "mpc_jupyter.panel"
    assert data == first
    second = publisher.publish({**STATE, "queries": []})
    assert comm.sent[1] == ("comm_msg", second, {})
    assert len(RecordingComm.instances) == 1


def test_request_state_resends_the_latest() -> None:
    publisher = PanelPublisher(comm_factory=RecordingComm)
    publisher.publish(STATE)
    (comm,) = RecordingComm.instances
    comm.from_frontend({"type": "request_state"})
    assert comm.sent[-1] == ("comm_msg", publisher.latest, {})
    comm.from_frontend({"type": "something_else"})
    assert len(comm.sent) == 2


def test_closed_by_frontend_reopens_on_next_publish() -> None:
    publisher = PanelPublisher(comm_factory=RecordingComm)
    publisher.publish(STATE)
    RecordingComm.instances[0].close_from_frontend()
    assert not publisher.is_open
    publisher.publish(STATE)
    assert len(RecordingComm.instances) == 2
    assert RecordingComm.instances[1].sent[0][0] == "comm_open"


def test_close_sends_comm_close() -> None:
    publisher = PanelPublisher(comm_factory=RecordingComm)
    publisher.publish(STATE)
    publisher.close()
    assert RecordingComm.instances[0].sent[-1][0] == "comm_close"
    assert not publisher.is_open


def test_without_a_frontend_the_default_comm_is_silent() -> None:
    # Outside a kernel, comm.create_comm gives a comm that sends nothing.
    publisher = PanelPublisher()
    assert publisher.publish(STATE)["type"] == "state"
    assert publisher.publish(STATE)["sites"][0]["name"] == "st-olav"
    publisher.close()


def test_a_failing_comm_disables_publishing_quietly() -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("no kernel")

    publisher = PanelPublisher(comm_factory=broken)
    assert publisher.publish(STATE)["type"] == "state"
    assert not publisher.is_open
    assert publisher.latest is not None
