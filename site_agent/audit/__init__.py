"""The site's audit log: one signed, hash-chained JSONL entry per request.

``entry`` defines an entry, its hash and the analyst's receipt; ``log`` appends durably;
``verify`` checks a whole file and names the first bad line.
"""

from site_agent.audit.entry import Receipt, Reveal, verify_receipt
from site_agent.audit.log import AuditLog
from site_agent.audit.verify import VerifyResult, verify

__all__ = ["AuditLog", "Receipt", "Reveal", "VerifyResult", "verify", "verify_receipt"]
