"""The reference model: pure, deterministic, no I/O.

gnttab     Xen's grant tables (v1) and GNTTABOP statuses (Xen 4.17)
allocator  the guest's grant-ref allocator, policies "seed" and "linux-6.1"
ring       shared-ring indices and the notify rules (io/ring.h)
blkif      blkif requests and the grants they use (io/blkif.h)
rules      every rule's id, meaning and source; Divergence
"""

from harness.model.allocator import POLICIES, GuestAllocator
from harness.model.gnttab import DomainFacts, Expect, GrantTable, Hypervisor, expected_status
from harness.model.ring import FrontRing, push_notify
from harness.model.rules import RULES, Divergence, Rule, Unsupported

__all__ = [
    "POLICIES", "RULES", "Divergence", "DomainFacts", "Expect", "FrontRing", "GrantTable",
    "GuestAllocator", "Hypervisor", "Rule", "Unsupported", "expected_status", "push_notify",
]
