"""Xen's grant tables (v1) and the GNTTABOP operations, status by status.

One `GrantTable` per domain holds what the grant table page holds (the
shared entries {flags, domid, frame} the guest writes and Xen reads) and what
Xen keeps beside it (the active entry: pin counters, the mapping domain, the
machine frame).  `Hypervisor` answers each GNTTABOP with the status Xen
4.17's own code gives the same inputs; every branch below names the function
and check in xen/common/grant_table.c (RELEASE-4.17.7) it follows.

What the model cannot observe it does not guess: a frame Xen would refuse
(GNTST_bad_page) must be declared (`bad_gfns`), a table size never observed
stays unknown and the checks that need it are skipped, not invented.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.model.constants import (
    DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES, DOMID_SELF, EBUSY,
    EINVAL, ENOSYS, EPERM, ESRCH, GNTCOPY_dest_gref, GNTCOPY_source_gref,
    GNTMAP_application_map, GNTMAP_contains_pte, GNTMAP_device_map,
    GNTMAP_host_map, GNTMAP_readonly, GNTPIN_devr_inc, GNTPIN_devw_inc,
    GNTPIN_hstr_inc, GNTPIN_hstw_inc, GNTPIN_writable_mask,
    GNTST_bad_copy_arg, GNTST_bad_dev_addr, GNTST_bad_domain, GNTST_bad_gntref,
    GNTST_bad_handle, GNTST_bad_page, GNTST_general_error, GNTST_NAMES,
    GNTST_no_space, GNTST_okay, GNTST_permission_denied,
    GNTTAB_NR_RESERVED_ENTRIES, GREFS_PER_FRAME, GTF_accept_transfer,
    GTF_permit_access, GTF_readonly, GTF_reading, GTF_sub_page,
    GTF_transfer_committed, GTF_transfer_completed, GTF_type_mask, GTF_writing,
    INITIAL_NR_GRANT_FRAMES, MAPTRACK_PER_PAGE, PAGE_SIZE,
)
from harness.model.rules import Divergence, Unsupported

NO_DOMAIN = -1


def status_name(status: int | None) -> str:
    if status is None:
        return "unknown"
    return f"GNTST_{GNTST_NAMES.get(status, str(status))} ({status})"


@dataclass(frozen=True, slots=True)
class Expect:
    """What Xen answers: `value` (a GNTST status or an rc), and why.

    value None: the answer depends on something the model cannot see; any
    answer is accepted and what happened is learned from it.
    """

    value: int | None
    why: str


@dataclass(slots=True)
class DomainFacts:
    """What Xen knows about a domain that no trace event shows."""

    domid: int
    hvm: bool = True
    privileged: bool = False
    max_grant_frames: int | None = None
    max_version: int = 2


@dataclass(slots=True)
class Mapping:
    """A maptrack entry of the mapping domain (xen/common/grant_table.c struct grant_mapping)."""

    rdom: int
    ref: int
    flags: int
    host_addr: int | None
    dev_bus_addr: int | None


def pin_increment(flags: int) -> int:
    """xen/common/grant_table.c map_grant_ref: which counters a map bumps."""
    incr = 0
    if flags & GNTMAP_device_map:
        incr += GNTPIN_devr_inc if flags & GNTMAP_readonly else GNTPIN_devw_inc
    if flags & GNTMAP_host_map:
        incr += GNTPIN_hstr_inc if flags & GNTMAP_readonly else GNTPIN_hstw_inc
    return incr


class GrantTable:
    """One domain's grant table: shared v1 entries plus Xen's active entries.

    Lists indexed by grant ref, sized for the maximum table.  `known[ref]` is
    0 for an entry whose content was set before the trace began (the model
    then accepts what happens to it and learns from it).  `alloc_state` is
    the guest allocator's per-ref state (harness.model.allocator), kept here
    so it always has the table's size.
    """

    __slots__ = (
        "domid", "max_frames", "nr_frames", "version", "flags", "gdom", "frame",
        "pin", "mapdom", "mfn", "soft", "known", "capacity", "alloc_state", "_side", "mapped",
    )

    def __init__(self, domid: int, max_frames: int | None, nr_frames: int | None = None):
        self.domid = domid
        self.max_frames = max_frames
        # Xen's number of frames; None until an event shows it.
        self.nr_frames = nr_frames
        self.version = 1
        self.capacity = 0
        self.flags: list[int] = []
        self.gdom: list[int] = []
        self.frame: list[int] = []
        self.pin: list[int] = []
        self.mapdom: list[int] = []
        self.mfn: list[int | None] = []
        # ref -> why the model believes another domain maps it without having
        # seen the map ("ring", "persistent", "observed", "reserved").
        self.soft: dict[int, str] = {}
        self.known = bytearray()
        self.alloc_state = bytearray()
        self._side: list[tuple[list, object]] = []
        self.mapped = 0  # entries with a non-zero pin: Xen's "active" entries
        self.grow_capacity(max_frames or DEFAULT_MAX_GRANT_FRAMES)

    def grow_capacity(self, frames: int) -> None:
        want = frames * GREFS_PER_FRAME
        extra = want - self.capacity
        if extra <= 0:
            return
        self.flags.extend([0] * extra)
        self.gdom.extend([0] * extra)
        self.frame.extend([0] * extra)
        self.pin.extend([0] * extra)
        self.mapdom.extend([NO_DOMAIN] * extra)
        self.mfn.extend([None] * extra)
        self.known.extend(bytes(extra))
        self.alloc_state.extend(bytes(extra))
        for array, default in self._side:
            array.extend([default] * extra)
        self.capacity = want

    def side_array(self, default: object) -> list:
        """A list indexed by ref, for a layer above (blkif), that grows with the table."""
        array = [default] * self.capacity
        self._side.append((array, default))
        return array

    def set_frames(self, nr_frames: int) -> None:
        """Xen's table now has at least `nr_frames` (it never shrinks in v1)."""
        if self.nr_frames is None or nr_frames > self.nr_frames:
            self.nr_frames = nr_frames
        self.grow_capacity(nr_frames)

    def nr_entries(self) -> int | None:
        return None if self.nr_frames is None else self.nr_frames * GREFS_PER_FRAME

    def mark_all_known(self) -> None:
        self.known[:] = b"\x01" * self.capacity

    def entry_state(self, ref: int) -> dict:
        """The model's belief about one entry, for a divergence report."""
        if ref < 0 or ref >= self.capacity:
            return {"ref": ref, "note": "outside the table"}
        flags = self.flags[ref]
        state = {
            "ref": ref,
            "flags": f"{flags:#x}",
            "granted_to": self.gdom[ref] if flags & GTF_type_mask else None,
            "frame": f"{self.frame[ref]:#x}" if flags & GTF_type_mask else None,
            "pin": f"{self.pin[ref]:#x}",
            "mapped_by": self.mapdom[ref] if self.pin[ref] else None,
        }
        if ref in self.soft:
            state["mapping_inferred"] = self.soft[ref]
        if not self.known[ref]:
            state["note"] = "granted before the trace began; learned from events"
        return state

    # --- what Xen does to an entry's pins and flags

    def pin_map(self, ref: int, mapdom: int, incr: int, readonly: bool) -> None:
        """map_grant_ref success: _set_status_v1 sets reading (and writing)."""
        if not self.pin[ref]:
            self.mapdom[ref] = mapdom
            self.mapped += 1
        self.pin[ref] += incr
        self.flags[ref] |= GTF_reading if readonly else GTF_reading | GTF_writing

    def unpin(self, ref: int, decr: int, readonly: bool) -> None:
        """unmap_common_complete + reduce_status_for_pin."""
        pin = self.pin[ref] - decr
        self.pin[ref] = pin
        clear = 0 if pin else GTF_reading
        if not readonly and not pin & GNTPIN_writable_mask:
            clear |= GTF_writing
        self.flags[ref] &= ~clear
        if not pin:
            self.mapdom[ref] = NO_DOMAIN
            self.mfn[ref] = None
            self.soft.pop(ref, None)
            self.mapped -= 1

    def pin_soft(self, ref: int, mapdom: int, why: str, readonly: bool = False) -> None:
        """Record a mapping the model infers but did not see (blkback's)."""
        if self.pin[ref]:
            return  # already mapped, seen or inferred
        self.pin_map(ref, mapdom, GNTPIN_hstr_inc if readonly else GNTPIN_hstw_inc, readonly)
        self.soft[ref] = why

    def unpin_soft(self, ref: int) -> None:
        if ref in self.soft:
            if self.pin[ref]:
                self.mapped -= 1
            self.pin[ref] = 0
            self.mapdom[ref] = NO_DOMAIN
            self.flags[ref] &= ~(GTF_reading | GTF_writing)
            del self.soft[ref]

    def start_anew(self) -> list[int]:
        """The domain restored from a save is a new one: Xen's table for it
        has every entry zero and nothing mapped.  Entries are marked not
        known (what the guest does to them next is learned); the refs that
        were granted, in order."""
        granted = [ref for ref in range(self.capacity) if self.flags[ref] & GTF_type_mask]
        for ref in granted:
            self.known[ref] = 0
        n = self.capacity
        self.flags[:] = [0] * n
        self.gdom[:] = [0] * n
        self.frame[:] = [0] * n
        self.pin[:] = [0] * n
        self.mapdom[:] = [NO_DOMAIN] * n
        self.mfn[:] = [None] * n
        self.soft.clear()
        self.mapped = 0
        return granted

    def learn_mapping(self, ref: int, mapdom: int, pin: int, flags: int, gdom: int, frame: int,
                      why: str) -> None:
        """Take an entry as Xen lists it (one the model could not have seen being made)."""
        if not self.pin[ref] and pin:
            self.mapped += 1
        self.flags[ref] = flags
        self.gdom[ref] = gdom
        self.frame[ref] = frame
        self.pin[ref] = pin
        self.mapdom[ref] = mapdom
        self.soft[ref] = why
        self.known[ref] = 1


class Hypervisor:
    """The grant-table half of Xen: every domain's table and maptrack."""

    def __init__(self, domains: dict[int, DomainFacts] | None = None,
                 bad_gfns: dict[int, set[int]] | None = None,
                 default_max_frames: int = DEFAULT_MAX_GRANT_FRAMES):
        self.facts: dict[int, DomainFacts] = dict(domains or {})
        self.bad_gfns = {dom: set(gfns) for dom, gfns in (bad_gfns or {}).items()}
        self.default_max_frames = default_max_frames
        self.tables: dict[int, GrantTable] = {}
        self.maptrack: dict[int, dict[int, Mapping]] = {}
        self.destroyed: set[int] = set()
        self.maptrack_limit = DEFAULT_MAX_MAPTRACK_FRAMES * MAPTRACK_PER_PAGE

    # --- domains

    def add_domain(self, domid: int) -> DomainFacts:
        facts = self.facts.get(domid)
        if facts is None:
            facts = self.facts[domid] = DomainFacts(domid, hvm=domid != 0, privileged=domid == 0)
        self.destroyed.discard(domid)
        return facts

    def exists(self, domid: int) -> bool:
        """rcu_lock_domain_by_id: the model knows every domain named in the trace."""
        return domid in self.facts and domid not in self.destroyed

    def resolve(self, caller: int, domid: int) -> int:
        """rcu_lock_domain_by_any_id: DOMID_SELF means the caller."""
        return caller if domid == DOMID_SELF else domid

    def table(self, domid: int) -> GrantTable:
        table = self.tables.get(domid)
        if table is None:
            facts = self.add_domain(domid)
            max_frames = facts.max_grant_frames or self.default_max_frames
            table = self.tables[domid] = GrantTable(domid, max_frames)
        return table

    def destroy(self, domid: int) -> None:
        """The domain is gone: its table, its mappings, others' mappings of it."""
        self.destroyed.add(domid)
        self.tables.pop(domid, None)
        self.maptrack.pop(domid, None)
        self.forget_mappings_of(domid)

    def forget_mappings_of(self, domid: int) -> None:
        """Every other domain's mapping of `domid`'s grants is gone."""
        for handles in self.maptrack.values():
            for handle in [h for h, m in handles.items() if m.rdom == domid]:
                del handles[handle]

    def _xsm_target(self, caller: int, target: int) -> bool:
        """xen/include/xsm/dummy.h xsm_default_action(XSM_TARGET)."""
        return caller == target or self.add_domain(caller).privileged

    def _bad_gfn(self, domid: int, gfn: int) -> bool:
        """get_paged_frame: GNTST_bad_page for a frame the domain does not own."""
        return gfn in self.bad_gfns.get(domid, ())

    # --- GNTTABOP_query_size

    def _lookup_target(self, caller: int, rdom: int, where: str, missing: int,
                       denied: int) -> Expect | None:
        """rcu_lock_domain_by_any_id, then an XSM_TARGET hook: the first two checks
        of query_size, setup_table and get_version (answered as `missing`/`denied`)."""
        target = self.resolve(caller, rdom)
        if not self.exists(target):
            return Expect(missing, f"no domain {target} ({where}: rcu_lock_domain_by_any_id)")
        if not self._xsm_target(caller, target):
            return Expect(denied, f"d{caller} may not act on d{target} ({where}: XSM_TARGET hook)")
        return None

    def expect_query_size(self, caller: int, rdom: int) -> Expect:
        return (self._lookup_target(caller, rdom, "gnttab_query_size", GNTST_bad_domain,
                                    GNTST_permission_denied)
                or Expect(GNTST_okay, "gnttab_query_size"))

    def query_size(self, caller: int, rdom: int, status: int,
                   nr_frames: int | None, max_nr_frames: int | None, rc: int = 0) -> None:
        if rc:
            return  # -EFAULT/-EINVAL before any status was written (a bad buffer or count)
        self._check("gnttab.query_size.status", self.expect_query_size(caller, rdom), status,
                    {"caller": caller, "rdom": rdom})
        if status != GNTST_okay:
            return
        table = self.table(self.resolve(caller, rdom))
        if nr_frames is not None:
            if table.nr_frames is not None and nr_frames != table.nr_frames:
                raise Divergence("gnttab.query_size.output",
                                 f"query_size reports {nr_frames} frames; the model has {table.nr_frames}",
                                 expected=table.nr_frames, actual=nr_frames,
                                 state={"rdom": table.domid})
            table.set_frames(nr_frames)
        if max_nr_frames is not None:
            if table.max_frames is not None and max_nr_frames != table.max_frames:
                raise Divergence("gnttab.query_size.output",
                                 f"query_size reports max {max_nr_frames} frames; the model has {table.max_frames}",
                                 expected=table.max_frames, actual=max_nr_frames,
                                 state={"rdom": table.domid})
            table.max_frames = max_nr_frames
            table.grow_capacity(max_nr_frames)

    # --- GNTTABOP_setup_table

    def expect_setup_table(self, caller: int, rdom: int, nr_frames: int) -> Expect:
        refused = self._lookup_target(caller, rdom, "gnttab_setup_table", GNTST_bad_domain,
                                      GNTST_permission_denied)
        if refused is not None:
            return refused
        table = self.table(self.resolve(caller, rdom))
        if table.max_frames is not None and nr_frames > table.max_frames:
            return Expect(GNTST_general_error,
                          f"{nr_frames} frames > max {table.max_frames} (gnttab_setup_table: \"limited to %u grant-table frames\")")
        return Expect(GNTST_okay, "gnttab_setup_table (grows the table if needed)")

    def setup_table(self, caller: int, rdom: int, nr_frames: int, status: int) -> None:
        self._check("gnttab.setup_table.status", self.expect_setup_table(caller, rdom, nr_frames),
                    status, {"caller": caller, "rdom": rdom, "nr_frames": nr_frames})
        if status == GNTST_okay:
            self.table(self.resolve(caller, rdom)).set_frames(max(nr_frames, INITIAL_NR_GRANT_FRAMES))

    # --- GNTTABOP_map_grant_ref

    def expect_map(self, caller: int, rdom: int, ref: int, flags: int) -> Expect:
        incr = pin_increment(flags)
        if not incr:
            return Expect(GNTST_bad_gntref,
                          "neither GNTMAP_host_map nor GNTMAP_device_map (map_grant_ref: \"Bad flags in grant map op\")")
        if self.add_domain(caller).hvm and flags & (GNTMAP_device_map | GNTMAP_application_map
                                                    | GNTMAP_contains_pte):
            return Expect(GNTST_general_error,
                          "HVM caller asked for a device/application/PTE map (map_grant_ref: \"No device mapping in HVM domain\")")
        if not self.exists(rdom):
            return Expect(GNTST_bad_domain,
                          f"no domain {rdom}; DOMID_SELF is not accepted here (map_grant_ref: rcu_lock_domain_by_id)")
        if len(self.maptrack.get(caller, ())) >= self.maptrack_limit:
            return Expect(GNTST_no_space, "maptrack full (map_grant_ref: get_maptrack_handle)")
        table = self.table(rdom)
        entries = table.nr_entries()
        if entries is not None and ref >= entries:
            return Expect(GNTST_bad_gntref, f"ref {ref} >= {entries} entries (map_grant_ref: \"Bad ref\")")
        if entries is None and ref >= table.capacity:
            return Expect(GNTST_bad_gntref, f"ref {ref} beyond the maximum table (map_grant_ref: \"Bad ref\")")
        if not table.known[ref] and not table.pin[ref]:
            return Expect(None, "entry written before the trace began")
        if table.version != 1:
            raise Unsupported(f"d{rdom} uses grant table v{table.version}; the model covers v1")
        pin = table.pin[ref]
        if pin and (table.mapdom[ref] != caller or pin & (incr << 7)):
            return Expect(GNTST_general_error,
                          f"entry already mapped by d{table.mapdom[ref]} or its pin counter is full "
                          "(map_grant_ref: \"Bad domain ... or risk of counter overflow\")")
        readonly = bool(flags & GNTMAP_readonly)
        sflags = table.flags[ref]
        if not pin or (not readonly and not pin & GNTPIN_writable_mask):
            # _set_status_v1 with mapflag set: GTF_sub_page joins the type mask.
            if not pin and ((sflags & (GTF_type_mask | GTF_sub_page)) != GTF_permit_access
                            or table.gdom[ref] != caller):
                return Expect(GNTST_general_error,
                              f"entry flags {sflags:#x} domid {table.gdom[ref]} do not permit d{caller} "
                              "(_set_status_v1: \"Bad flags or dom\")")
            if not readonly and sflags & GTF_readonly:
                return Expect(GNTST_general_error,
                              "write map of a read-only grant (_set_status_v1: \"Attempt to write-pin a r/o grant entry\")")
        if not pin and self._bad_gfn(rdom, table.frame[ref]):
            return Expect(GNTST_bad_page, f"frame {table.frame[ref]:#x} refused (get_paged_frame)")
        return Expect(GNTST_okay, "map_grant_ref")

    def map(self, caller: int, rdom: int, ref: int, flags: int, status: int,
            handle: int | None, host_addr: int | None, dev_bus_addr: int | None) -> None:
        expect = self.expect_map(caller, rdom, ref, flags)
        state = self._map_state(caller, rdom, ref, flags)
        self._check("gnttab.map.status", expect, status, state)
        if status != GNTST_okay:
            return
        table = self.table(rdom)
        handles = self.maptrack.setdefault(caller, {})
        if handle is not None:
            if handle in handles:
                raise Divergence("gnttab.map.output", f"map returned handle {handle}, which is still live",
                                 state={**state, "live_handle": _mapping_state(handles[handle])},
                                 actual=handle)
            if (dev_bus_addr is not None and table.pin[ref] and table.mfn[ref] is not None
                    and dev_bus_addr != table.mfn[ref]):
                raise Divergence("gnttab.map.output",
                                 f"map of an entry already mapped returned frame address {dev_bus_addr:#x}, "
                                 f"not {table.mfn[ref]:#x}",
                                 state=state, expected=table.mfn[ref], actual=dev_bus_addr)
            handles[handle] = Mapping(rdom, ref, flags, host_addr, dev_bus_addr)
        table.known[ref] = 1
        if ref in table.soft:
            # A map we see replaces the one we had only inferred.
            table.unpin_soft(ref)
        table.pin_map(ref, caller, pin_increment(flags), bool(flags & GNTMAP_readonly))
        if dev_bus_addr is not None:
            table.mfn[ref] = dev_bus_addr

    def _map_state(self, caller: int, rdom: int, ref: int, flags: int) -> dict:
        state = {"caller": caller, "rdom": rdom, "ref": ref, "flags": f"{flags:#x}"}
        if rdom in self.tables:
            state["entry"] = self.tables[rdom].entry_state(ref)
        return state

    # --- GNTTABOP_unmap_grant_ref

    def expect_unmap(self, caller: int, handle: int, host_addr: int | None,
                     dev_bus_addr: int | None) -> Expect:
        mapping = self.maptrack.get(caller, {}).get(handle)
        if mapping is None:
            return Expect(GNTST_bad_handle,
                          f"d{caller} has no live mapping with handle {handle} (unmap_common: \"Bad handle\"/\"Zero flags\")")
        if (dev_bus_addr and mapping.flags & GNTMAP_device_map and mapping.dev_bus_addr is not None
                and dev_bus_addr != mapping.dev_bus_addr):
            return Expect(GNTST_bad_dev_addr,
                          "device address differs from the mapping's (unmap_common: \"Bus address doesn't match gntref\")")
        if (host_addr and mapping.flags & GNTMAP_host_map and mapping.host_addr is not None
                and host_addr != mapping.host_addr):
            return Expect(GNTST_general_error,
                          "host address is not where the grant is mapped (unmap_common: replace_grant_host_mapping fails)")
        return Expect(GNTST_okay, "unmap_common")

    def unmap(self, caller: int, handle: int, status: int, host_addr: int | None,
              dev_bus_addr: int | None) -> None:
        handles = self.maptrack.get(caller, {})
        mapping = handles.get(handle)
        state: dict = {"caller": caller, "handle": handle}
        if mapping is not None:
            state["mapping"] = _mapping_state(mapping)
            if mapping.rdom in self.tables:
                state["entry"] = self.tables[mapping.rdom].entry_state(mapping.ref)
        self._check("gnttab.unmap.status", self.expect_unmap(caller, handle, host_addr, dev_bus_addr),
                    status, state)
        if status != GNTST_okay or mapping is None:
            return
        # unmap_common: a part is torn down only if its address was given;
        # an address not recorded (None) is taken as the one the map used.
        done = 0
        if mapping.flags & GNTMAP_host_map and host_addr != 0:
            done |= GNTMAP_host_map
        if mapping.flags & GNTMAP_device_map and dev_bus_addr != 0:
            done |= GNTMAP_device_map
        if not done:
            return
        readonly = bool(mapping.flags & GNTMAP_readonly)
        decr = pin_increment((mapping.flags & GNTMAP_readonly) | done)
        mapping.flags &= ~done
        if not mapping.flags & (GNTMAP_host_map | GNTMAP_device_map):
            del handles[handle]
        table = self.tables.get(mapping.rdom)
        if table is not None:
            table.unpin(mapping.ref, decr, readonly)

    # --- GNTTABOP_copy

    def expect_copy(self, caller: int, src_dom: int, src: int, src_off: int, dst_dom: int,
                    dst: int, dst_off: int, length: int, flags: int) -> Expect:
        # gnttab_copy_lock_domains: source first, then destination.
        sides = ((src_dom, bool(flags & GNTCOPY_source_gref), "source"),
                 (dst_dom, bool(flags & GNTCOPY_dest_gref), "destination"))
        for domid, is_gref, name in sides:
            if domid != DOMID_SELF and not is_gref:
                return Expect(GNTST_permission_denied,
                              f"{name} names a frame of another domain (gnttab_copy_lock_domain: "
                              "\"Only DOMID_SELF may reference via frame\")")
            if not self.exists(self.resolve(caller, domid)):
                return Expect(GNTST_bad_domain, f"no {name} domain {domid} (gnttab_copy_lock_domain)")
        # gnttab_copy_claim_buf: source (read-only), then destination (writable).
        for domid, value, is_gref, readonly, name in (
                (src_dom, src, bool(flags & GNTCOPY_source_gref), True, "source"),
                (dst_dom, dst, bool(flags & GNTCOPY_dest_gref), False, "destination")):
            owner = self.resolve(caller, domid)
            if is_gref:
                expect = self._expect_acquire_for_copy(caller, owner, value, readonly, name)
                if expect is not None:
                    return expect
            elif self._bad_gfn(owner, value):
                return Expect(GNTST_bad_page, f"{name} frame {value:#x} refused (get_paged_frame)")
        if src_off + length > PAGE_SIZE or dst_off + length > PAGE_SIZE:
            return Expect(GNTST_bad_copy_arg, "offset + len crosses the page (gnttab_copy_buf: \"copy beyond page area\")")
        return Expect(GNTST_okay, "gnttab_copy_one")

    def _expect_acquire_for_copy(self, caller: int, owner: int, ref: int, readonly: bool,
                                 name: str) -> Expect | None:
        """acquire_grant_for_copy, v1: the checks in the order Xen makes them."""
        table = self.table(owner)
        entries = table.nr_entries()
        limit = entries if entries is not None else table.capacity
        if ref >= limit:
            return Expect(GNTST_bad_gntref, f"{name} ref {ref} >= {limit} entries (acquire_grant_for_copy)")
        if not table.known[ref] and not table.pin[ref]:
            return Expect(None, "entry written before the trace began")
        if table.version != 1:
            raise Unsupported(f"d{owner} uses grant table v{table.version}; the model covers v1")
        pin = table.pin[ref]
        incr = GNTPIN_hstr_inc if readonly else GNTPIN_hstw_inc
        if pin and (table.mapdom[ref] != caller or pin & (incr << 7)):
            return Expect(GNTST_general_error,
                          f"{name} entry is mapped by d{table.mapdom[ref]} (acquire_grant_for_copy: \"Bad domain\")")
        sflags = table.flags[ref]
        if not pin or (not readonly and not pin & GNTPIN_writable_mask):
            # _set_status_v1 without mapflag: GTF_sub_page is not checked.
            if not pin and ((sflags & GTF_type_mask) != GTF_permit_access or table.gdom[ref] != caller):
                return Expect(GNTST_general_error,
                              f"{name} entry flags {sflags:#x} domid {table.gdom[ref]} do not permit d{caller} "
                              "(_set_status_v1)")
            if not readonly and sflags & GTF_readonly:
                return Expect(GNTST_general_error,
                              f"{name} is a read-only grant (_set_status_v1: \"Attempt to write-pin a r/o grant entry\")")
            if not pin and self._bad_gfn(owner, table.frame[ref]):
                return Expect(GNTST_bad_page, f"{name} frame {table.frame[ref]:#x} refused (get_paged_frame)")
        return None

    def copy(self, caller: int, src_dom: int, src: int, src_off: int, dst_dom: int, dst: int,
             dst_off: int, length: int, flags: int, status: int) -> None:
        expect = self.expect_copy(caller, src_dom, src, src_off, dst_dom, dst, dst_off, length, flags)
        state = {"caller": caller, "src_dom": src_dom, "src": src, "src_off": src_off,
                 "dst_dom": dst_dom, "dst": dst, "dst_off": dst_off, "len": length,
                 "flags": f"{flags:#x}"}
        self._check("gnttab.copy.status", expect, status, state)
        # A copy pins its grants only for the length of the hypercall.

    # --- GNTTABOP_transfer

    def expect_transfer(self, caller: int, rdom: int, ref: int, gfn: int) -> Expect:
        if self.add_domain(caller).hvm:
            return Expect(-ENOSYS, "HVM callers may not transfer (hvm_grant_table_op: -ENOSYS)")
        if self._bad_gfn(caller, gfn):
            return Expect(GNTST_bad_page, f"frame {gfn:#x} refused (gnttab_transfer: \"out-of-range\")")
        if not self.exists(rdom):
            return Expect(GNTST_bad_domain, f"no domain {rdom} (gnttab_transfer: \"can't find d%d\")")
        table = self.table(rdom)
        entries = table.nr_entries()
        if entries is not None and ref >= entries:
            return Expect(GNTST_general_error,
                          f"ref {ref} >= {entries} entries; transfer answers general_error, not bad_gntref "
                          "(gnttab_prepare_for_transfer: \"Bad grant reference\")")
        if not table.known[ref]:
            return Expect(None, "entry written before the trace began")
        if table.flags[ref] != GTF_accept_transfer or table.gdom[ref] != caller:
            return Expect(GNTST_general_error,
                          f"entry flags {table.flags[ref]:#x} domid {table.gdom[ref]} do not accept a "
                          f"transfer from d{caller} (gnttab_prepare_for_transfer: \"Bad flags\")")
        return Expect(GNTST_okay, "gnttab_transfer")

    def transfer(self, caller: int, rdom: int, ref: int, gfn: int, status: int, rc: int) -> None:
        expect = self.expect_transfer(caller, rdom, ref, gfn)
        state = {"caller": caller, "rdom": rdom, "ref": ref, "gfn": f"{gfn:#x}"}
        if expect.value == -ENOSYS:
            if rc != -ENOSYS:
                raise Divergence("gnttab.transfer.status", f"transfer by HVM d{caller} returned rc {rc}, "
                                 f"expected -ENOSYS: {expect.why}", state=state, expected=-ENOSYS, actual=rc)
            return
        self._check("gnttab.transfer.status", expect, status, state)
        if status == GNTST_okay:
            table = self.table(rdom)
            table.flags[ref] |= GTF_transfer_committed | GTF_transfer_completed

    # --- GNTTABOP_set_version / get_version (answered in rc, not status)

    def expect_set_version(self, caller: int, version: int) -> Expect:
        table = self.table(caller)
        if version not in (1, 2):
            return Expect(-EINVAL, "version neither 1 nor 2 (gnttab_set_version)")
        if version == 2 and self.add_domain(caller).max_version == 1:
            return Expect(-ENOSYS, "the domain's max grant version is 1 (gnttab_set_version)")
        if table.version == version:
            return Expect(0, "already that version (gnttab_set_version)")
        entries = table.nr_entries() or table.capacity
        for ref in range(GNTTAB_NR_RESERVED_ENTRIES, entries):
            if table.pin[ref]:
                return Expect(-EBUSY, f"entry {ref} is mapped (gnttab_set_version: \"some grant entries still in use\")")
        return Expect(0, "gnttab_set_version")

    def set_version(self, caller: int, version: int, rc: int, out_version: int | None) -> None:
        table = self.table(caller)
        expect = self.expect_set_version(caller, version)
        state = {"caller": caller, "version": version, "table_version": table.version}
        self._check("gnttab.set_version.result", expect, rc, state, rc_style=True)
        if rc == 0:
            table.version = version
        if out_version is not None and out_version != table.version:
            raise Divergence("gnttab.set_version.result",
                             f"set_version wrote back version {out_version}; the table is v{table.version}",
                             state=state, expected=table.version, actual=out_version)

    def expect_get_version(self, caller: int, rdom: int) -> Expect:
        return (self._lookup_target(caller, rdom, "gnttab_get_version", -ESRCH, -EPERM)
                or Expect(0, "gnttab_get_version"))

    def get_version(self, caller: int, rdom: int, rc: int, version: int | None) -> None:
        state = {"caller": caller, "rdom": rdom}
        self._check("gnttab.get_version.result", self.expect_get_version(caller, rdom), rc, state,
                    rc_style=True)
        if rc == 0 and version is not None:
            table = self.table(self.resolve(caller, rdom))
            if version != table.version:
                raise Divergence("gnttab.get_version.result",
                                 f"get_version says v{version}; the table is v{table.version}",
                                 state=state, expected=table.version, actual=version)

    # --- shared

    @staticmethod
    def _check(rule: str, expect: Expect, actual: int, state: dict, rc_style: bool = False) -> None:
        if expect.value is None or expect.value == actual:
            return
        if rc_style:
            message = f"returned {actual}, Xen's source gives {expect.value}: {expect.why}"
        else:
            message = f"returned {status_name(actual)}, Xen's source gives {status_name(expect.value)}: {expect.why}"
        raise Divergence(rule, message, state=state, expected=expect.value, actual=actual)


def _mapping_state(mapping: Mapping) -> dict:
    return {"rdom": mapping.rdom, "ref": mapping.ref, "flags": f"{mapping.flags:#x}"}


def expected_status(hv: Hypervisor, op: str, caller: int, **inputs: int) -> Expect:
    """The status (or rc) Xen 4.17 gives `op` with these inputs in the model's state.

    A conformance test sets up the state (grants, maps) through the
    Hypervisor or a replayed trace, then compares each real answer with this.
    `op` is the GNTTABOP name without prefix: query_size, setup_table, map,
    unmap, copy, transfer, set_version, get_version.
    """
    methods = {
        "query_size": hv.expect_query_size, "setup_table": hv.expect_setup_table,
        "map": hv.expect_map, "unmap": hv.expect_unmap, "copy": hv.expect_copy,
        "transfer": hv.expect_transfer, "set_version": hv.expect_set_version,
        "get_version": hv.expect_get_version,
    }
    try:
        method = methods[op]
    except KeyError:
        raise ValueError(f"unknown GNTTABOP {op!r}; one of {sorted(methods)}") from None
    return method(caller, **inputs)
