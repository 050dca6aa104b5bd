"""Control messages between the analyst's client and the agents, and between members.

Each kind is registered with the frame codec, which refuses unknown kinds, missing or extra
fields and wrongly typed values before a handler sees them. Results travel as two frames:
a ``result`` control message (public metadata and the site's receipt) and a
``RESULT_SHARES`` array frame holding the member's pair of shares of the declared outputs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..net.framing import Frame, MsgType, register_control

NONE = type(None)

QUERY = "query"
RESULT = "result"
FAILURE = "failure"
PROGRESS = "progress"
STATUS_REQUEST = "status_request"
STATUS = "status"
POLICY = "policy"
PENDING = "pending"
REVIEW_LIST_REQUEST = "review_list_request"
REVIEW_LIST = "review_list"
REVIEW_FETCH = "review_fetch"
REVIEW_DECISION = "review_decision"
REVIEW_CONFIRM = "review_confirm"

register_control(QUERY, {"envelope": str, "mode": str})
register_control(RESULT, {"site": str, "query_id": str, "receipt": dict, "meta": str, "stats": dict})
register_control(
    FAILURE,
    {"site": str, "query_id": str, "category": str, "rule": str, "message": str, "receipt": (dict, NONE)},
)
register_control(PROGRESS, {"site": str, "query_id": str, "phase": str, "seconds": float})
register_control(STATUS_REQUEST, {})
register_control(
    STATUS,
    {
        "site": str,
        "version": str,
        "tables": dict,
        "policy_digest": str,
        "peers": dict,
        "committee": list,
        "budget": dict,  # the asking analyst's DP budget at this site (site_agent/privacy/accountant.py)
    },
)
register_control(POLICY, {"site": str, "policy": dict})
# Output review (site_agent.agent.reviews): a member's answer when the result is held; the
# analyst's requests for the state of held results, for the approved ones, and its client's
# confirmation that it reconstructed them; and a reviewing site's decision with its time, sent
# to the other members.
register_control(PENDING, {"site": str, "query_id": str, "sites": list, "deadline": float, "receipt": dict})
register_control(REVIEW_LIST_REQUEST, {})
register_control(REVIEW_LIST, {"site": str, "items": list})
register_control(REVIEW_FETCH, {"query_ids": list})
register_control(REVIEW_DECISION, {"site": str, "query_id": str, "decision": str, "time": (int, float)})
register_control(REVIEW_CONFIRM, {"query_ids": list})

# Input-only sites (site_agent/agent/inputs.py, input_site.py): a member forwards the analyst's
# signed envelope with the sites' policies; the input site answers with its verdict, the digests
# the members check and the seeds of its shares (the array part follows as an INPUT_SHARES frame
# keyed like the answer: site_agent.agent.inputs.answer_key); a model's session asks it for its
# vector at each step's public parameters (``input_step``, answered by another ``input`` with that
# step); after the session the member tells it which query sets the released result opened.
INPUT_REQUEST = "input_request"
INPUT_STEP = "input_step"
INPUT = "input"
INPUT_OUTCOME = "input_outcome"
register_control(INPUT_REQUEST, {"envelope": str, "policies": dict})
register_control(INPUT_STEP, {"query_id": str, "step": int, "params": (dict, NONE)})
register_control(
    INPUT,
    {
        "site": str,
        "query_id": str,
        "verdict": str,
        "digest": str,
        "ledger_digest": str,
        "category": str,
        "rule": str,
        "message": str,
        "receipt": (dict, NONE),
        "seeds": list,
        "words": int,
        "step": int,
    },
)
register_control(INPUT_OUTCOME, {"query_id": str, "released": bool, "opened": list})

MODES = ("run", "explain")

# Phases a query goes through, in order; the notebook's progress display names them.
PHASES = ("verified", "compiled", "agreed", "local", "shared", "computed", "revealed")


def session_id(envelope_digest: str) -> bytes:
    """The MPC session id of a query: every member derives it from the envelope alone."""
    return hashlib.sha256(b"mpc-jupyter.session.v1:" + bytes.fromhex(envelope_digest)).digest()[:16]


def control(kind: str, sender: int, frame_type: MsgType = MsgType.CONTROL, **fields: Any) -> Frame:
    """A control frame of a registered ``kind`` (the codec checks ``fields`` against its schema)."""
    return Frame(frame_type, sender=sender, control={"kind": kind, **fields})
