"""Constants of the Xen ABI and of the drivers, each with where it comes from.

XEN     = xen/include/public/grant_table.h, Xen RELEASE-4.17.7 (Debian 12's
          xen 4.17.7+13); the values are the same in every 4.17.x.
XENC    = xen/common/grant_table.c, Xen RELEASE-4.17.7.
RING    = xen/include/public/io/ring.h, Xen RELEASE-4.17.7.
BLKIF   = xen/include/public/io/blkif.h, Xen RELEASE-4.17.7.
LINUX   = Linux 6.1 (Debian linux-source-6.1 6.1.192), the file named.
"""

PAGE_SIZE = 4096  # XEN_PAGE_SIZE on x86

# --- grant entries, v1 (XEN: struct grant_entry_v1 {u16 flags; u16 domid; u32 frame})
GRANT_ENTRY_V1_SIZE = 8
GREFS_PER_FRAME = PAGE_SIZE // GRANT_ENTRY_V1_SIZE  # 512; XENC SHGNT_PER_PAGE_V1
GNTTAB_NR_RESERVED_ENTRIES = 8  # XEN
GNTTAB_RESERVED_CONSOLE = 0  # XEN
GNTTAB_RESERVED_XENSTORE = 1  # XEN
INITIAL_NR_GRANT_FRAMES = 1  # xen/arch/x86/include/asm/grant_table.h
DEFAULT_MAX_GRANT_FRAMES = 64  # XENC opt_max_grant_frames
DEFAULT_MAX_MAPTRACK_FRAMES = 1024  # XENC opt_max_maptrack_frames
# XENC MAPTRACK_PER_PAGE: PAGE_SIZE / sizeof(struct grant_mapping) (16 bytes)
MAPTRACK_PER_PAGE = PAGE_SIZE // 16

# GTF_* (XEN): type in bits 0-1, then flag bits
GTF_invalid = 0
GTF_permit_access = 1
GTF_accept_transfer = 2
GTF_transitive = 3
GTF_type_mask = 3
GTF_readonly = 1 << 2
GTF_reading = 1 << 3
GTF_writing = 1 << 4
GTF_PWT = 1 << 5
GTF_PCD = 1 << 6
GTF_PAT = 1 << 7
GTF_sub_page = 1 << 8
GTF_transfer_committed = 1 << 2
GTF_transfer_completed = 1 << 3

# GNTMAP_* (XEN)
GNTMAP_device_map = 1 << 0
GNTMAP_host_map = 1 << 1
GNTMAP_readonly = 1 << 2
GNTMAP_application_map = 1 << 3
GNTMAP_contains_pte = 1 << 4

# GNTCOPY_* (XEN)
GNTCOPY_source_gref = 1 << 0
GNTCOPY_dest_gref = 1 << 1

# GNTST_* (XEN)
GNTST_okay = 0
GNTST_general_error = -1
GNTST_bad_domain = -2
GNTST_bad_gntref = -3
GNTST_bad_handle = -4
GNTST_bad_virt_addr = -5
GNTST_bad_dev_addr = -6
GNTST_no_device_space = -7
GNTST_permission_denied = -8
GNTST_bad_page = -9
GNTST_bad_copy_arg = -10
GNTST_address_too_big = -11
GNTST_eagain = -12
GNTST_no_space = -13

GNTST_NAMES = {
    0: "okay", -1: "general_error", -2: "bad_domain", -3: "bad_gntref",
    -4: "bad_handle", -5: "bad_virt_addr", -6: "bad_dev_addr",
    -7: "no_device_space", -8: "permission_denied", -9: "bad_page",
    -10: "bad_copy_arg", -11: "address_too_big", -12: "eagain", -13: "no_space",
}

# GNTTABOP_* (XEN)
GNTTABOP_map_grant_ref = 0
GNTTABOP_unmap_grant_ref = 1
GNTTABOP_setup_table = 2
GNTTABOP_dump_table = 3
GNTTABOP_transfer = 4
GNTTABOP_copy = 5
GNTTABOP_query_size = 6
GNTTABOP_unmap_and_replace = 7
GNTTABOP_set_version = 8
GNTTABOP_get_status_frames = 9
GNTTABOP_get_version = 10

# Active-entry pin counters (XENC struct active_grant_entry): four 8-bit
# counters in one word, host-writable in the lowest byte.
GNTPIN_cntr_width = 8
GNTPIN_cntr_mask = (1 << GNTPIN_cntr_width) - 1
GNTPIN_hstw_inc = 1 << 0
GNTPIN_hstr_inc = 1 << 8
GNTPIN_devw_inc = 1 << 16
GNTPIN_devr_inc = 1 << 24
GNTPIN_hstw_mask = GNTPIN_cntr_mask << 0
GNTPIN_hstr_mask = GNTPIN_cntr_mask << 8
GNTPIN_devw_mask = GNTPIN_cntr_mask << 16
GNTPIN_devr_mask = GNTPIN_cntr_mask << 24
GNTPIN_writable_mask = GNTPIN_hstw_mask | GNTPIN_devw_mask

DOMID_SELF = 0x7FF0  # xen/include/public/xen.h

# errno values the guest functions return negated (Linux include/uapi/asm-generic)
EPERM = 1
ESRCH = 3
EAGAIN = 11
EBUSY = 16
EINVAL = 22
ENOSPC = 28
ENOSYS = 38
EOPNOTSUPP = 95

# --- guest allocators
# LINUX drivers/xen/grant-table.c GNTTAB_LIST_END; the seed's gnttab.c uses
# the same value for its end-of-chain marker.
GNTTAB_LIST_END = 0xFFFFFFFF
# The seed's __max_nr_grant_frames: "Legacy max supported number of frames"
# when GNTTABOP_query_size fails (also LINUX __max_nr_grant_frames).
LEGACY_MAX_GRANT_FRAMES = 4

# --- shared rings (RING) and blkif (BLKIF)
SRING_HEADER_SIZE = 64  # req_prod, req_event, rsp_prod, rsp_event, pvt[4], __pad[44]
BLKIF_REQUEST_SIZE = 112  # struct blkif_request on x86_64 (8+8+8+11*8)
BLKIF_RESPONSE_SIZE = 16  # struct blkif_response on x86_64
RING_IDX_MASK = 0xFFFFFFFF  # RING_IDX is unsigned int: indices wrap at 2**32

BLKIF_OP_READ = 0
BLKIF_OP_WRITE = 1
BLKIF_OP_WRITE_BARRIER = 2
BLKIF_OP_FLUSH_DISKCACHE = 3
BLKIF_OP_RESERVED_1 = 4
BLKIF_OP_DISCARD = 5
BLKIF_OP_INDIRECT = 6
BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
# BLKIF: an indirect page holds PAGE_SIZE / sizeof(struct blkif_request_segment)
SEGS_PER_INDIRECT_FRAME = PAGE_SIZE // 8
SECTORS_PER_PAGE = PAGE_SIZE >> 9  # first_sect/last_sect are < 8
BLKIF_RSP_OKAY = 0
BLKIF_RSP_ERROR = -1
BLKIF_RSP_EOPNOTSUPP = -2


def ring_size(entry_size: int, area: int) -> int:
    """RING __CONST_RING_SIZE: entries that fit after the header, rounded down to 2**n."""
    fit = (area - SRING_HEADER_SIZE) // entry_size
    return 1 << (fit.bit_length() - 1) if fit > 0 else 0


BLKIF_RING_SIZE_1PAGE = ring_size(BLKIF_REQUEST_SIZE, PAGE_SIZE)  # 32
