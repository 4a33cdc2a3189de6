// SPDX-License-Identifier: GPL-2.0
/*
 * xenrig_gnttab: a grant-table exerciser for xenrig's PV-on-HVM guests.
 *
 * Userspace writes one command line to /sys/kernel/debug/xenrig_gnttab/ctl;
 * the module calls the kernel's exported grant-table API (or issues the
 * GNTTABOP hypercall itself) and appends one JSON object per event to
 * /sys/kernel/debug/xenrig_gnttab/log.  docs/exerciser.md is the reference
 * for the commands and the fields of every line.
 *
 * Safety rules, because this runs next to blkfront and xenbus in the same
 * grant table:
 *  - the module only ends, frees, grants or releases refs it obtained itself
 *    (tracked in xr.refs), so a typo cannot corrupt another driver's grant;
 *  - a page that may still be mapped by another domain is never freed by us:
 *    it stays granted, or is handed to gnttab_end_foreign_access(), which
 *    frees it once the other side has unmapped it;
 *  - every argument is range-checked before it reaches the grant API, which
 *    itself checks almost nothing (release and claim index the free list
 *    directly).
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/crc32.h>
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/hardirq.h>
#include <linux/irqflags.h>
#include <linux/kernel.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/rwsem.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/unaligned.h>

#include <xen/xen.h>
#include <xen/page.h>
#include <xen/grant_table.h>
#include <xen/xenbus.h>
#include <xen/interface/grant_table.h>
#include <asm/xen/hypercall.h>

#define XR_NR_CHAINS		64
#define XR_NR_CALLBACKS		16
#define XR_NR_HANDOFFS		64
#define XR_KEY_MAX		32
#define XR_REFS_PER_FRAME	(XEN_PAGE_SIZE / sizeof(struct grant_entry_v1))
/* Bounds the ref-state table: 1024 frames * 512 refs * 16 bytes = 8 MiB. */
#define XR_MAX_TRACKED_FRAMES	1024
#define XR_SETUP_MAX_FRAMES	4096
#define XR_GFNS_LOGGED		64
#define XR_CTL_MAX		512
#define XR_MAX_TOKENS		8
#define XR_LINE_MAX		2048
/* Room for the {"seq":..,"t_ns":.., prefix and the closing brace. */
#define XR_RESULT_MAX		(XR_LINE_MAX + 96)
/* Private chains end in this value (GNTTAB_LIST_END in grant-table.c). */
#define XR_LIST_END		0xffffffffU
#define XR_XS_DIR		"data/xenrig"
#define XR_PLATFORM_VENDOR	0x5853
#define XR_PLATFORM_DEVICE	0x0001
#define XR_PLATFORM_DEVICE_XS61	0x0002

/* A handler's answer when the line itself cannot be parsed. */
#define XR_SYNTAX		1

static unsigned int log_kib = 1024;
module_param(log_kib, uint, 0444);
MODULE_PARM_DESC(log_kib, "size of the event log buffer in KiB (64..65536, default 1024)");

/* ------------------------------------------------------------------ */
/* JSON lines                                                          */
/* ------------------------------------------------------------------ */

/*
 * One flat JSON object body ("op":..,"name":value,...) without braces.  A
 * field that does not fit is dropped whole, later fields are dropped too and
 * the line gets "truncated":1, so every line stays valid JSON.
 */
struct jline {
	char *buf;
	size_t cap;
	size_t len;
	bool truncated;
};

#define JL_RESERVE 24	/* for ,"truncated":1 and the NUL */

static __printf(2, 3) void jl_add(struct jline *j, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	if (j->truncated)
		return;
	room = j->cap - j->len;
	va_start(ap, fmt);
	n = vsnprintf(j->buf + j->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room) {
		j->buf[j->len] = '\0';
		j->truncated = true;
		return;
	}
	j->len += n;
}

static void jl_init(struct jline *j, char *buf, size_t size, const char *op)
{
	j->buf = buf;
	j->cap = size - JL_RESERVE;
	j->len = 0;
	j->truncated = false;
	buf[0] = '\0';
	jl_add(j, "\"op\":\"%s\"", op);
}

static void jl_rollback(struct jline *j, size_t start)
{
	if (j->truncated) {
		j->len = start;
		j->buf[start] = '\0';
	}
}

static void jl_int(struct jline *j, const char *name, long long v)
{
	jl_add(j, ",\"%s\":%lld", name, v);
}

static void jl_u64(struct jline *j, const char *name, unsigned long long v)
{
	jl_add(j, ",\"%s\":%llu", name, v);
}

static void jl_str(struct jline *j, const char *name, const char *s)
{
	size_t start = j->len;

	jl_add(j, ",\"%s\":\"", name);
	for (; *s && !j->truncated; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			jl_add(j, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			jl_add(j, "\\u%04x", c);
		else
			jl_add(j, "%c", c);
	}
	jl_add(j, "\"");
	jl_rollback(j, start);
}

static void jl_arr(struct jline *j, const char *name, const s64 *v, unsigned int n)
{
	size_t start = j->len;
	unsigned int i;

	jl_add(j, ",\"%s\":[", name);
	for (i = 0; i < n; i++)
		jl_add(j, i ? ",%lld" : "%lld", v[i]);
	jl_add(j, "]");
	jl_rollback(j, start);
}

#define JL_HEX_MAX 16

static void jl_hex(struct jline *j, const char *name, const void *p, unsigned int n)
{
	char hex[2 * JL_HEX_MAX + 1];

	*bin2hex(hex, p, min_t(unsigned int, n, JL_HEX_MAX)) = '\0';
	jl_str(j, name, hex);
}

/* ------------------------------------------------------------------ */
/* The event log                                                       */
/* ------------------------------------------------------------------ */

/*
 * Append-only until `clear`.  Bytes below xlog.len never change while the
 * generation stays the same, so readers copy them to userspace without the
 * spinlock; clear_sem keeps `clear` from rewinding the buffer under a reader.
 * Once a line does not fit, that line and every later one are dropped (the
 * log stays a gap-free prefix) and readers see one synthesized log_overflow
 * line at the end.
 */
static struct {
	spinlock_t lock;	/* appends may come from a free callback, irqs off */
	struct rw_semaphore clear_sem;
	char *buf;
	size_t size;
	size_t len;
	u64 gen;
	u64 next_seq;
	u64 dropped;
	u64 first_dropped_seq;
	u64 first_dropped_t_ns;
	u64 last_dropped_seq;
} xlog;

static void xlog_append(const struct jline *j, char *copy, size_t copy_size)
{
	const char *tail = j->truncated ? ",\"truncated\":1}\n" : "}\n";
	size_t hlen, tlen = strlen(tail), total;
	unsigned long flags;
	char hdr[64];
	u64 seq, t;

	spin_lock_irqsave(&xlog.lock, flags);
	seq = xlog.next_seq++;
	t = ktime_get_ns();
	hlen = scnprintf(hdr, sizeof(hdr), "{\"seq\":%llu,\"t_ns\":%llu,", seq, t);
	total = hlen + j->len + tlen;
	if (!xlog.dropped && xlog.len + total <= xlog.size) {
		memcpy(xlog.buf + xlog.len, hdr, hlen);
		memcpy(xlog.buf + xlog.len + hlen, j->buf, j->len);
		memcpy(xlog.buf + xlog.len + hlen + j->len, tail, tlen);
		xlog.len += total;
	} else {
		if (!xlog.dropped) {
			xlog.first_dropped_seq = seq;
			xlog.first_dropped_t_ns = t;
		}
		xlog.dropped++;
		xlog.last_dropped_seq = seq;
	}
	spin_unlock_irqrestore(&xlog.lock, flags);

	if (copy)
		scnprintf(copy, copy_size, "%s%s%s", hdr, j->buf, tail);
}

/* ------------------------------------------------------------------ */
/* Module state (all of it under cmd_mutex except the callbacks)       */
/* ------------------------------------------------------------------ */

#define XR_OWNED	0x01	/* obtained by this module, not in a chain */
#define XR_GRANTED	0x02	/* entry written by us, access not ended yet */
#define XR_READONLY	0x04
#define XR_HANDOFF	0x08	/* published under data/xenrig/ */

struct xr_ref {
	struct page *page;
	u32 csum;		/* crc32 of the page when it was granted */
	u16 domid;
	u8 flags;
	u8 pad;
};

struct xr_chain {
	bool used;
	grant_ref_t head;
	unsigned int count;	/* as allocated */
	unsigned int remaining;	/* allocated - claimed + released */
};

struct xr_cb {
	struct gnttab_free_callback cb;
	unsigned int id;
	u16 count;
	atomic_t armed;
	atomic64_t fired;
};

struct xr_handoff {
	bool used;
	grant_ref_t ref;
	char key[XR_KEY_MAX + 1];
};

static DEFINE_MUTEX(cmd_mutex);

static struct {
	struct dentry *dir;
	struct xr_ref *refs;
	unsigned int nrefs;		/* refs tracked: min(max frames, cap) * 512 */
	unsigned int max_frames;	/* gnttab_max_grant_frames() at load */
	struct xr_chain chains[XR_NR_CHAINS];
	struct xr_cb cbs[XR_NR_CALLBACKS];
	struct xr_handoff handoffs[XR_NR_HANDOFFS];
	u32 pattern_ctr;
	bool platform_pci;
	bool platform_bound;
	u64 bar1_start;
	u64 bar1_len;
	char line_buf[XR_LINE_MAX];
	char step_buf[XR_LINE_MAX];
	char last_result[XR_RESULT_MAX];
} xr;

/*
 * A line of a command (under cmd_mutex).  It is also kept for ctl to read
 * back; a command's last line is its result line.
 */
static void xr_emit(struct jline *j)
{
	xlog_append(j, xr.last_result, sizeof(xr.last_result));
}

static struct jline *xr_step(const char *op)
{
	static struct jline step;

	jl_init(&step, xr.step_buf, sizeof(xr.step_buf), op);
	return &step;
}

static int refuse(struct jline *j, int err, const char *reason)
{
	jl_int(j, "ret", err);
	jl_str(j, "reason", reason);
	return 0;
}

static s64 head_val(grant_ref_t head)
{
	return (s64)(s32)head;	/* GNTTAB_LIST_END shows as -1 */
}

/* ------------------------------------------------------------------ */
/* Hypercalls                                                          */
/* ------------------------------------------------------------------ */

struct xr_qs {
	int rc;
	s16 status;
	u32 nr_frames;
	u32 max_nr_frames;
};

static void xr_query_size(domid_t dom, struct xr_qs *q)
{
	struct gnttab_query_size op = { .dom = dom };

	q->rc = HYPERVISOR_grant_table_op(GNTTABOP_query_size, &op, 1);
	q->status = op.status;
	q->nr_frames = q->rc ? 0 : op.nr_frames;
	q->max_nr_frames = q->rc ? 0 : op.max_nr_frames;
}

static void jl_qs(struct jline *j, const struct xr_qs *q)
{
	jl_int(j, "rc", q->rc);
	jl_int(j, "status", q->status);
	jl_u64(j, "nr_frames", q->nr_frames);
	jl_u64(j, "max_nr_frames", q->max_nr_frames);
}

static bool gfn_in_bar1(unsigned long gfn)
{
	u64 addr;

	if (!xr.bar1_len || gfn > (U64_MAX >> XEN_PAGE_SHIFT))
		return false;
	addr = (u64)gfn << XEN_PAGE_SHIFT;
	return addr >= xr.bar1_start && addr - xr.bar1_start < xr.bar1_len;
}

static void jl_bar1(struct jline *j)
{
	jl_int(j, "platform_pci", xr.platform_pci);
	jl_u64(j, "bar1_start", xr.bar1_start);
	jl_u64(j, "bar1_len", xr.bar1_len);
}

/*
 * GNTTABOP_setup_table for `dom` with nr_frames = n; logs rc, status, the
 * first gfns and how many of them lie in the platform device's BAR 1.  For a
 * translated guest Xen answers with the GFN where each frame is mapped (~0
 * when it is not mapped anywhere), and grows the table first when n is above
 * the current size.
 */
static int xr_setup_table_logged(struct jline *j, domid_t dom, u32 n, const char *prefix)
{
	struct gnttab_setup_table op = { .dom = dom, .nr_frames = n };
	s64 logged[XR_GFNS_LOGGED];
	unsigned int i, in_bar = 0, invalid = 0, nlog = 0;
	xen_pfn_t *frames;
	char name[32];
	int rc;

	frames = kcalloc(max_t(u32, n, 1), sizeof(*frames), GFP_KERNEL);
	if (!frames)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		frames[i] = ~(xen_pfn_t)0;
	set_xen_guest_handle(op.frame_list, frames);

	rc = HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &op, 1);

	if (!rc && op.status == GNTST_okay) {
		for (i = 0; i < n; i++) {
			if (frames[i] == ~(xen_pfn_t)0)
				invalid++;
			else if (gfn_in_bar1(frames[i]))
				in_bar++;
			if (nlog < XR_GFNS_LOGGED)
				logged[nlog++] = (s64)frames[i];
		}
	}
	kfree(frames);

	snprintf(name, sizeof(name), "%src", prefix);
	jl_int(j, name, rc);
	snprintf(name, sizeof(name), "%sstatus", prefix);
	jl_int(j, name, op.status);
	jl_arr(j, "gfns", logged, nlog);
	jl_int(j, "gfns_logged", nlog);
	jl_int(j, "frames_in_bar", in_bar);
	jl_int(j, "frames_unmapped", invalid);
	jl_bar1(j);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Refs, pages, xenstore                                               */
/* ------------------------------------------------------------------ */

static struct xr_ref *owned_ref(u64 ref)
{
	if (ref >= xr.nrefs || !(xr.refs[ref].flags & XR_OWNED))
		return NULL;
	return &xr.refs[ref];
}

static u32 page_csum(struct page *page)
{
	/* Same value as Python's zlib.crc32(page_bytes). */
	return crc32_le(~0U, page_address(page), PAGE_SIZE) ^ ~0U;
}

/*
 * Page layout (docs/exerciser.md): "XRGT", ref, pattern (le32 each), domid
 * (le16), readonly (u8), 0; then 32-bit words w[i] = pattern + i, i = 4..1023.
 */
static u32 fill_page(struct page *page, grant_ref_t ref, domid_t domid, bool ro,
		     u32 pattern)
{
	u8 *p = page_address(page);
	unsigned int i;

	memcpy(p, "XRGT", 4);
	put_unaligned_le32(ref, p + 4);
	put_unaligned_le32(pattern, p + 8);
	put_unaligned_le16(domid, p + 12);
	p[14] = ro;
	p[15] = 0;
	for (i = 4; i < PAGE_SIZE / 4; i++)
		put_unaligned_le32(pattern + i, p + 4 * i);
	return page_csum(page);
}

static int unpublish_ref(grant_ref_t ref)
{
	int i, removed = 0;

	for (i = 0; i < XR_NR_HANDOFFS; i++) {
		struct xr_handoff *h = &xr.handoffs[i];

		if (!h->used || h->ref != ref)
			continue;
		xenbus_rm(XBT_NIL, XR_XS_DIR, h->key);
		h->used = false;
		removed++;
	}
	return removed;
}

/*
 * The ref leaves the module's hands (freed, released into a chain, or given
 * to the kernel): its page goes with it and its xenstore key is removed.
 * Only called once the grant is no longer in effect, or with free_page false
 * when the kernel has taken the page.
 */
static void forget_ref(grant_ref_t ref, bool free_page)
{
	struct xr_ref *r = &xr.refs[ref];

	if (r->flags & XR_HANDOFF)
		unpublish_ref(ref);
	if (free_page && r->page)
		__free_page(r->page);
	memset(r, 0, sizeof(*r));
}

static void take_ref(grant_ref_t ref)
{
	memset(&xr.refs[ref], 0, sizeof(xr.refs[ref]));
	xr.refs[ref].flags = XR_OWNED;
}

static bool parse_num(const char *s, u64 *v)
{
	int rc = kstrtou64(s, 0, v);

	if (rc == -ERANGE) {
		*v = U64_MAX;	/* a number, just too big: range checks refuse it */
		return true;
	}
	return rc == 0;
}

static bool parse_access(const char *s, bool *ro)
{
	if (!strcmp(s, "ro"))
		*ro = true;
	else if (!strcmp(s, "rw"))
		*ro = false;
	else
		return false;
	return true;
}

static bool parse_domid(const char *s, u64 *v)
{
	if (!strcmp(s, "self")) {
		*v = DOMID_SELF;
		return true;
	}
	return parse_num(s, v);
}

/* ------------------------------------------------------------------ */
/* Commands                                                            */
/* ------------------------------------------------------------------ */

static int cmd_alloc(struct jline *j, int argc, char **argv)
{
	grant_ref_t head = XR_LIST_END;
	int c, ret;
	u64 n;

	if (!parse_num(argv[1], &n))
		return XR_SYNTAX;
	jl_u64(j, "count", n);
	/*
	 * 0 is refused: get_free_entries(0) in 6.1 unlinks the free-list head
	 * without counting it, which would corrupt gnttab_free_count.
	 */
	if (n < 1 || n > U16_MAX)
		return refuse(j, -EINVAL, "count_out_of_range");
	for (c = 0; c < XR_NR_CHAINS && xr.chains[c].used; c++)
		;
	if (c == XR_NR_CHAINS)
		return refuse(j, -EMFILE, "no_chain_slot");

	ret = gnttab_alloc_grant_references((u16)n, &head);
	jl_int(j, "ret", ret);
	if (ret) {
		jl_int(j, "head", -1);
		jl_int(j, "chain", -1);
		return 0;
	}
	xr.chains[c] = (struct xr_chain){ .used = true, .head = head,
					  .count = n, .remaining = n };
	jl_int(j, "head", head_val(head));
	jl_int(j, "chain", c);
	return 0;
}

static struct xr_chain *chain_arg(struct jline *j, u64 c)
{
	jl_u64(j, "chain", c);
	if (c >= XR_NR_CHAINS || !xr.chains[c].used) {
		refuse(j, -EINVAL, "bad_chain");
		return NULL;
	}
	return &xr.chains[c];
}

static int cmd_claim(struct jline *j, int argc, char **argv)
{
	struct xr_chain *ch;
	int ret;
	u64 c;

	if (!parse_num(argv[1], &c))
		return XR_SYNTAX;
	ch = chain_arg(j, c);
	if (!ch)
		return 0;

	ret = gnttab_claim_grant_reference(&ch->head);
	if (ret >= 0 && (unsigned int)ret >= xr.nrefs) {
		/* Beyond what we track: put it back rather than hold it blind. */
		gnttab_release_grant_reference(&ch->head, ret);
		jl_int(j, "untracked_ref", ret);
		ret = -ERANGE;
	} else if (ret >= 0) {
		if (xr.refs[ret].flags & XR_OWNED)
			jl_int(j, "was_owned", 1);
		take_ref(ret);
		if (ch->remaining)
			ch->remaining--;
	}
	jl_int(j, "ret", ret);
	jl_int(j, "ref", ret >= 0 ? ret : -1);
	jl_int(j, "head", head_val(ch->head));
	jl_int(j, "remaining", ch->remaining);
	return 0;
}

static int cmd_release(struct jline *j, int argc, char **argv)
{
	struct xr_chain *ch;
	struct xr_ref *r;
	u64 c, ref;

	if (!parse_num(argv[1], &c) || !parse_num(argv[2], &ref))
		return XR_SYNTAX;
	jl_u64(j, "ref", ref);
	ch = chain_arg(j, c);
	if (!ch)
		return 0;
	r = owned_ref(ref);
	if (!r)
		return refuse(j, -EPERM, "ref_not_owned");
	if (r->flags & XR_GRANTED)
		return refuse(j, -EBUSY, "ref_granted");

	jl_int(j, "page_freed", !!r->page);
	forget_ref(ref, true);
	gnttab_release_grant_reference(&ch->head, ref);
	ch->remaining++;
	jl_int(j, "ret", 0);
	jl_int(j, "head", head_val(ch->head));
	jl_int(j, "remaining", ch->remaining);
	return 0;
}

static int cmd_free_chain(struct jline *j, int argc, char **argv)
{
	struct xr_chain *ch;
	u64 c;

	if (!parse_num(argv[1], &c))
		return XR_SYNTAX;
	ch = chain_arg(j, c);
	if (!ch)
		return 0;
	jl_int(j, "head", head_val(ch->head));
	jl_int(j, "remaining", ch->remaining);
	gnttab_free_grant_references(ch->head);
	memset(ch, 0, sizeof(*ch));
	jl_int(j, "ret", 0);
	return 0;
}

/* Logs the domid argument; refuses (and says so) one that is not a domid_t. */
static bool bad_domid(struct jline *j, u64 domid)
{
	jl_u64(j, "domid", domid);
	if (domid <= U16_MAX)
		return false;
	refuse(j, -EINVAL, "bad_domid");
	return true;
}

static int cmd_grant(struct jline *j, int argc, char **argv)
{
	struct xr_ref *r;
	unsigned long gfn;
	bool ro, new_page = false;
	u64 ref, domid;
	u32 pattern;

	if (!parse_num(argv[1], &ref) || !parse_num(argv[2], &domid) ||
	    !parse_access(argv[3], &ro))
		return XR_SYNTAX;
	jl_u64(j, "ref", ref);
	if (bad_domid(j, domid))
		return 0;
	jl_int(j, "readonly", ro);
	r = owned_ref(ref);
	if (!r)
		return refuse(j, -EPERM, "ref_not_owned");
	if (r->flags & XR_GRANTED)
		return refuse(j, -EBUSY, "ref_granted");
	if (!r->page) {
		r->page = alloc_page(GFP_KERNEL);
		if (!r->page)
			return refuse(j, -ENOMEM, "no_page");
		new_page = true;
	}
	gfn = xen_page_to_gfn(r->page);
	if (gfn > U32_MAX)	/* a v1 entry's frame field is 32 bits wide */
		return refuse(j, -E2BIG, "gfn_over_32_bits");

	pattern = ++xr.pattern_ctr;
	r->csum = fill_page(r->page, ref, domid, ro, pattern);
	r->domid = domid;
	r->flags = (r->flags & ~XR_READONLY) | XR_GRANTED | (ro ? XR_READONLY : 0);
	gnttab_grant_foreign_access_ref(ref, domid, gfn, ro);

	jl_u64(j, "gfn", gfn);
	jl_u64(j, "pattern", pattern);
	jl_u64(j, "csum", r->csum);
	jl_int(j, "new_page", new_page);
	jl_int(j, "ret", 0);
	return 0;
}

/*
 * gnttab_grant_foreign_access() on a fresh, filled page; shared by
 * grant_access and handoff.  Returns the ref or a negative errno (already
 * logged as "ret").
 */
static int grant_new_page(struct jline *j, domid_t domid, bool ro)
{
	struct page *page;
	unsigned long gfn;
	struct xr_ref *r;
	u32 pattern;
	int ret;

	page = alloc_page(GFP_KERNEL);
	if (!page) {
		refuse(j, -ENOMEM, "no_page");
		return -ENOMEM;
	}
	gfn = xen_page_to_gfn(page);
	if (gfn > U32_MAX) {
		__free_page(page);
		refuse(j, -E2BIG, "gfn_over_32_bits");
		return -E2BIG;
	}
	/* Filled before the grant; the ref in the header is set right after. */
	pattern = ++xr.pattern_ctr;
	fill_page(page, 0, domid, ro, pattern);

	ret = gnttab_grant_foreign_access(domid, gfn, ro);
	if (ret >= 0 && (unsigned int)ret >= xr.nrefs) {
		if (gnttab_try_end_foreign_access(ret))
			__free_page(page);
		else
			gnttab_end_foreign_access(ret, page);
		jl_int(j, "untracked_ref", ret);
		ret = -ERANGE;
	}
	jl_int(j, "ret", ret);
	if (ret < 0) {
		if (ret != -ERANGE)
			__free_page(page);
		return ret;
	}

	put_unaligned_le32(ret, (u8 *)page_address(page) + 4);
	r = &xr.refs[ret];
	if (r->flags & XR_OWNED)
		jl_int(j, "was_owned", 1);
	take_ref(ret);
	r->page = page;
	r->domid = domid;
	r->csum = page_csum(page);
	r->flags |= XR_GRANTED | (ro ? XR_READONLY : 0);

	jl_int(j, "ref", ret);
	jl_u64(j, "gfn", gfn);
	jl_u64(j, "pattern", pattern);
	jl_u64(j, "csum", r->csum);
	return ret;
}

static int cmd_grant_access(struct jline *j, int argc, char **argv)
{
	u64 domid;
	bool ro;

	if (!parse_num(argv[1], &domid) || !parse_access(argv[2], &ro))
		return XR_SYNTAX;
	if (bad_domid(j, domid))
		return 0;
	jl_int(j, "readonly", ro);
	grant_new_page(j, domid, ro);
	return 0;
}

static int cmd_end(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	int ret;

	jl_int(j, "was_granted", !!(r->flags & XR_GRANTED));
	ret = gnttab_end_foreign_access_ref(ref);
	if (ret == 1)
		r->flags &= ~XR_GRANTED;
	jl_int(j, "ret", ret);
	return 0;
}

static int cmd_try_end(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	int ret;

	jl_int(j, "was_granted", !!(r->flags & XR_GRANTED));
	ret = gnttab_try_end_foreign_access(ref);
	jl_int(j, "ret", ret);
	if (ret) {
		/* The kernel put the ref back on its free list. */
		jl_int(j, "page_freed", !!r->page);
		forget_ref(ref, true);
	}
	return 0;
}

static int cmd_end_page(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	struct page *page;

	/*
	 * With a NULL page and a busy entry the kernel derives the page from
	 * the entry's frame; we only pass pages we granted ourselves.
	 */
	if (!r->page)
		return refuse(j, -ENOENT, "no_page");
	page = r->page;
	jl_int(j, "was_granted", !!(r->flags & XR_GRANTED));
	jl_u64(j, "gfn", xen_page_to_gfn(page));
	forget_ref(ref, false);
	/* Ends now, or later from the kernel's deferred list: ref and page are its own. */
	gnttab_end_foreign_access(ref, page);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_free_ref(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	if (r->flags & XR_GRANTED)
		return refuse(j, -EBUSY, "ref_granted");
	jl_int(j, "page_freed", !!r->page);
	forget_ref(ref, true);
	gnttab_free_grant_reference(ref);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_free_page(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	if (!r->page)
		return refuse(j, -ENOENT, "no_page");
	if (r->flags & XR_GRANTED)
		return refuse(j, -EBUSY, "ref_granted");
	if (r->flags & XR_HANDOFF) {
		unpublish_ref(ref);
		r->flags &= ~XR_HANDOFF;
	}
	__free_page(r->page);
	r->page = NULL;
	r->csum = 0;
	jl_int(j, "ret", 0);
	return 0;
}

/*
 * Runs under the kernel's gnttab_list_lock with interrupts off, from whatever
 * freed refs (a command of ours, blkfront's completion interrupt, ...): only
 * append to the log.
 */
static void xr_callback_fn(void *arg)
{
	struct xr_cb *c = arg;
	struct jline j;
	char buf[256];
	s64 fired;

	atomic_set(&c->armed, 0);
	fired = atomic64_inc_return(&c->fired);
	jl_init(&j, buf, sizeof(buf), "callback_fired");
	jl_int(&j, "id", c->id);
	jl_int(&j, "count", c->count);
	jl_int(&j, "fired", fired);
	jl_int(&j, "in_hardirq", !!in_hardirq());
	jl_int(&j, "in_softirq", !!in_serving_softirq());
	jl_int(&j, "irqs_disabled", !!irqs_disabled());
	jl_int(&j, "ret", 0);
	xlog_append(&j, NULL, 0);
}

static int cmd_callback(struct jline *j, int argc, char **argv)
{
	struct xr_cb *c;
	s64 fired_before;
	u64 id, count;

	if (!parse_num(argv[1], &id) || !parse_num(argv[2], &count))
		return XR_SYNTAX;
	jl_u64(j, "id", id);
	jl_u64(j, "count", count);
	if (id >= XR_NR_CALLBACKS)
		return refuse(j, -EINVAL, "bad_callback_id");
	if (count > U16_MAX)
		return refuse(j, -EINVAL, "count_out_of_range");
	c = &xr.cbs[id];
	/*
	 * The kernel ignores a request for a callback already on its list; we
	 * refuse it instead so that our armed flag and its list never disagree.
	 */
	if (atomic_xchg(&c->armed, 1))
		return refuse(j, -EBUSY, "already_armed");
	c->count = count;
	fired_before = atomic64_read(&c->fired);
	gnttab_request_free_callback(&c->cb, xr_callback_fn, c, count);
	jl_int(j, "fired_during_request", atomic64_read(&c->fired) != fired_before);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_cancel_callback(struct jline *j, int argc, char **argv)
{
	struct xr_cb *c;
	u64 id;

	if (!parse_num(argv[1], &id))
		return XR_SYNTAX;
	jl_u64(j, "id", id);
	if (id >= XR_NR_CALLBACKS)
		return refuse(j, -EINVAL, "bad_callback_id");
	c = &xr.cbs[id];
	/* After this returns the callback is off the list and not running. */
	gnttab_cancel_free_callback(&c->cb);
	jl_int(j, "was_armed", atomic_xchg(&c->armed, 0));
	jl_int(j, "fired", atomic64_read(&c->fired));
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_exhaust(struct jline *j, int argc, char **argv)
{
	unsigned int bound = xr.nrefs, obtained = 0, grows = 0, i;
	s64 first = -1, last = -1;
	struct xr_qs q;
	u32 cur_frames;
	int ret = 0;

	xr_query_size(DOMID_SELF, &q);
	cur_frames = q.nr_frames;
	jl_u64(j, "frames_before", cur_frames);

	/*
	 * One ref per allocation, so every ref is seen: the first ref that
	 * lies in frame F >= the known size shows the table grew, and the
	 * hypervisor's size is logged right there.
	 */
	for (i = 0; i < bound; i++) {
		grant_ref_t head, ref;

		ret = gnttab_alloc_grant_references(1, &head);
		if (ret)
			break;
		/* A chain of one: claim its ref, as a driver would. */
		ref = gnttab_claim_grant_reference(&head);
		if (ref >= xr.nrefs) {
			gnttab_free_grant_reference(ref);
			jl_int(j, "untracked_ref", ref);
			ret = -ERANGE;
			break;
		}
		take_ref(ref);
		obtained++;
		if (first < 0)
			first = ref;
		last = ref;
		if (ref / XR_REFS_PER_FRAME >= cur_frames) {
			struct jline *s = xr_step("exhaust_grow");

			xr_query_size(DOMID_SELF, &q);
			cur_frames = max_t(u32, q.nr_frames, ref / XR_REFS_PER_FRAME + 1);
			grows++;
			jl_int(s, "ref", ref);
			jl_int(s, "frame", ref / XR_REFS_PER_FRAME);
			jl_int(s, "obtained", obtained);
			jl_qs(s, &q);
			jl_int(s, "ret", 0);
			xr_emit(s);
		}
		if (!(i % 512))
			cond_resched();
	}

	xr_query_size(DOMID_SELF, &q);
	jl_int(j, "ret", ret);
	jl_int(j, "obtained", obtained);
	jl_int(j, "bounded", i == bound);
	jl_int(j, "bound", bound);
	jl_int(j, "first_ref", first);
	jl_int(j, "last_ref", last);
	jl_int(j, "grow_events", grows);
	jl_u64(j, "max_grant_frames", gnttab_max_grant_frames());
	jl_qs(j, &q);
	return 0;
}

static int cmd_free_all(struct jline *j, int argc, char **argv)
{
	unsigned int chains = 0, refs = 0, ended = 0, pages = 0, in_use = 0, keys = 0;
	unsigned int c, ref;

	for (c = 0; c < XR_NR_CHAINS; c++) {
		struct xr_chain *ch = &xr.chains[c];
		struct jline *s;

		if (!ch->used)
			continue;
		s = xr_step("free_all_chain");
		jl_int(s, "chain", c);
		jl_int(s, "head", head_val(ch->head));
		jl_int(s, "remaining", ch->remaining);
		gnttab_free_grant_references(ch->head);
		memset(ch, 0, sizeof(*ch));
		jl_int(s, "ret", 0);
		xr_emit(s);
		chains++;
	}

	for (ref = 0; ref < xr.nrefs; ref++) {
		struct xr_ref *r = &xr.refs[ref];

		if (!(r->flags & XR_OWNED))
			continue;
		if (r->flags & XR_GRANTED) {
			struct jline *s = xr_step("free_all_grant");
			int ret = gnttab_end_foreign_access_ref(ref);

			jl_int(s, "ref", ref);
			jl_int(s, "domid", r->domid);
			jl_int(s, "ret", ret);
			xr_emit(s);
			if (!ret) {
				/* Still mapped: keep ref and page; free_all can be retried. */
				in_use++;
				continue;
			}
			ended++;
		}
		if (r->page)
			pages++;
		if (r->flags & XR_HANDOFF)
			keys++;
		forget_ref(ref, true);
		gnttab_free_grant_reference(ref);
		refs++;
		if (!(refs % 512))
			cond_resched();
	}

	jl_int(j, "chains_freed", chains);
	jl_int(j, "refs_freed", refs);
	jl_int(j, "grants_ended", ended);
	jl_int(j, "pages_freed", pages);
	jl_int(j, "keys_removed", keys);
	jl_int(j, "still_in_use", in_use);
	jl_int(j, "ret", in_use ? -EBUSY : 0);
	return 0;
}

static int cmd_query_size(struct jline *j, int argc, char **argv)
{
	struct xr_qs q;
	u64 dom = DOMID_SELF;

	if (argc > 1 && !parse_domid(argv[1], &dom))
		return XR_SYNTAX;
	jl_u64(j, "dom", dom);
	if (dom > U16_MAX)
		return refuse(j, -EINVAL, "bad_domid");
	xr_query_size(dom, &q);
	jl_qs(j, &q);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_setup_table(struct jline *j, int argc, char **argv)
{
	u64 n, dom = DOMID_SELF;
	int ret;

	if (!parse_num(argv[1], &n) || (argc > 2 && !parse_domid(argv[2], &dom)))
		return XR_SYNTAX;
	jl_u64(j, "nr_frames", n);
	jl_u64(j, "dom", dom);
	if (n > XR_SETUP_MAX_FRAMES)
		return refuse(j, -EINVAL, "too_many_frames");
	if (dom > U16_MAX)
		return refuse(j, -EINVAL, "bad_domid");
	ret = xr_setup_table_logged(j, dom, n, "");
	jl_int(j, "ret", ret);
	return 0;
}

static int cmd_get_version(struct jline *j, int argc, char **argv)
{
	struct gnttab_get_version op = { .dom = DOMID_SELF };
	u64 dom = DOMID_SELF;
	int rc;

	if (argc > 1 && !parse_domid(argv[1], &dom))
		return XR_SYNTAX;
	jl_u64(j, "dom", dom);
	if (dom > U16_MAX)
		return refuse(j, -EINVAL, "bad_domid");
	op.dom = dom;
	rc = HYPERVISOR_grant_table_op(GNTTABOP_get_version, &op, 1);
	jl_int(j, "rc", rc);
	jl_int(j, "version", rc ? -1 : (s64)op.version);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_set_version(struct jline *j, int argc, char **argv)
{
	struct gnttab_set_version op;
	bool force = false;
	int rc;
	u64 v;

	if (!parse_num(argv[1], &v))
		return XR_SYNTAX;
	if (argc > 2) {
		if (strcmp(argv[2], "force"))
			return XR_SYNTAX;
		force = true;
	}
	jl_u64(j, "version_requested", v);
	jl_int(j, "force", force);
	/*
	 * The kernel picked v1 at boot and keeps writing 8-byte v1 entries.
	 * A successful switch makes Xen clear every grant frame and read them
	 * with the 16-byte v2 layout: blkfront's and xenbus's grants are gone
	 * and the guest's I/O is dead until reboot.
	 */
	if (v != 1 && !force)
		return refuse(j, -EINVAL, "v1_only_guest");
	if (v > U32_MAX)
		return refuse(j, -EINVAL, "version_out_of_range");
	op.version = v;
	rc = HYPERVISOR_grant_table_op(GNTTABOP_set_version, &op, 1);
	jl_int(j, "rc", rc);
	jl_u64(j, "version", op.version);	/* Xen writes back the version in force */
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_frames(struct jline *j, int argc, char **argv)
{
	struct xr_qs q;
	int ret = 0;

	jl_u64(j, "max_grant_frames", gnttab_max_grant_frames());
	jl_u64(j, "refs_per_frame", XR_REFS_PER_FRAME);
	xr_query_size(DOMID_SELF, &q);
	jl_qs(j, &q);
	/*
	 * setup_table for the current size only reports where the frames are
	 * mapped; it grows nothing.
	 */
	if (!q.rc && q.status == GNTST_okay && q.nr_frames <= XR_SETUP_MAX_FRAMES)
		ret = xr_setup_table_logged(j, DOMID_SELF, q.nr_frames, "setup_");
	else
		jl_bar1(j);
	jl_int(j, "ret", ret);
	return 0;
}

static bool valid_key(const char *k)
{
	size_t n = strlen(k), i;

	if (n < 1 || n > XR_KEY_MAX)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum(k[i]) && k[i] != '_' && k[i] != '-' && k[i] != '.')
			return false;
	return true;
}

static int cmd_handoff(struct jline *j, int argc, char **argv)
{
	struct xr_handoff *slot = NULL, *free_slot = NULL;
	const char *key = argv[1];
	int i, ref, xs_rc;
	u64 domid;
	bool ro;

	if (!parse_num(argv[2], &domid) || !parse_access(argv[3], &ro))
		return XR_SYNTAX;
	jl_str(j, "key", key);
	if (bad_domid(j, domid))
		return 0;
	jl_int(j, "readonly", ro);
	if (!valid_key(key))
		return refuse(j, -EINVAL, "bad_key");
	for (i = 0; i < XR_NR_HANDOFFS; i++) {
		struct xr_handoff *h = &xr.handoffs[i];

		if (h->used && !strcmp(h->key, key))
			slot = h;
		else if (!h->used && !free_slot)
			free_slot = h;
	}
	if (!slot && !free_slot)
		return refuse(j, -EMFILE, "no_handoff_slot");

	ref = grant_new_page(j, domid, ro);
	if (ref < 0)
		return 0;
	jl_str(j, "xs_dir", XR_XS_DIR);
	xs_rc = xenbus_printf(XBT_NIL, XR_XS_DIR, key, "%d", ref);
	jl_int(j, "xs_rc", xs_rc);
	if (xs_rc)
		return 0;	/* the grant stands; end or free it like any other */

	if (slot) {
		/* Same key again: it now names the new ref; the old ref stays owned. */
		grant_ref_t old = slot->ref;
		bool still_named = false;

		jl_int(j, "replaced_ref", old);
		slot->ref = ref;
		for (i = 0; i < XR_NR_HANDOFFS; i++)
			still_named |= xr.handoffs[i].used && xr.handoffs[i].ref == old;
		if (!still_named && owned_ref(old))
			xr.refs[old].flags &= ~XR_HANDOFF;
	} else {
		free_slot->used = true;
		free_slot->ref = ref;
		strscpy(free_slot->key, key, sizeof(free_slot->key));
	}
	xr.refs[ref].flags |= XR_HANDOFF;
	return 0;
}

static int cmd_readback(struct jline *j, grant_ref_t ref, struct xr_ref *r)
{
	u32 csum;

	if (!r->page)
		return refuse(j, -ENOENT, "no_page");
	csum = page_csum(r->page);
	jl_int(j, "granted", !!(r->flags & XR_GRANTED));
	jl_int(j, "readonly", !!(r->flags & XR_READONLY));
	jl_hex(j, "head_hex", page_address(r->page), 16);
	jl_u64(j, "csum", csum);
	jl_u64(j, "csum_at_grant", r->csum);
	jl_int(j, "changed", csum != r->csum);
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_status(struct jline *j, int argc, char **argv)
{
	unsigned int owned = 0, granted = 0, pages = 0, i, n;
	s64 ids[XR_NR_CHAINS], heads[XR_NR_CHAINS];
	unsigned long flags;
	size_t log_len;
	u64 dropped;

	for (i = 0; i < xr.nrefs; i++) {
		u8 f = xr.refs[i].flags;

		owned += !!(f & XR_OWNED);
		granted += !!(f & XR_GRANTED);
		pages += !!xr.refs[i].page;
	}
	jl_int(j, "owned_refs", owned);
	jl_int(j, "granted_refs", granted);
	jl_int(j, "pages", pages);
	for (i = 0, n = 0; i < XR_NR_CHAINS; i++) {
		if (!xr.chains[i].used)
			continue;
		ids[n] = i;
		heads[n++] = head_val(xr.chains[i].head);
	}
	jl_arr(j, "chains", ids, n);
	jl_arr(j, "chain_heads", heads, n);
	for (i = 0, n = 0; i < XR_NR_CALLBACKS; i++)
		if (atomic_read(&xr.cbs[i].armed))
			ids[n++] = i;
	jl_arr(j, "callbacks_armed", ids, n);
	for (i = 0, n = 0; i < XR_NR_HANDOFFS; i++)
		n += xr.handoffs[i].used;
	jl_int(j, "handoffs", n);
	spin_lock_irqsave(&xlog.lock, flags);
	log_len = xlog.len;
	dropped = xlog.dropped;
	spin_unlock_irqrestore(&xlog.lock, flags);
	jl_u64(j, "log_bytes", log_len);
	jl_u64(j, "log_dropped", dropped);
	jl_u64(j, "refs_tracked", xr.nrefs);
	jl_u64(j, "max_grant_frames", gnttab_max_grant_frames());
	jl_int(j, "ret", 0);
	return 0;
}

static int cmd_clear(struct jline *j, int argc, char **argv)
{
	unsigned long flags;
	size_t bytes;
	u64 dropped;

	down_write(&xlog.clear_sem);
	spin_lock_irqsave(&xlog.lock, flags);
	bytes = xlog.len;
	dropped = xlog.dropped;
	xlog.len = 0;
	xlog.dropped = 0;
	xlog.gen++;
	spin_unlock_irqrestore(&xlog.lock, flags);
	up_write(&xlog.clear_sem);
	jl_u64(j, "bytes_cleared", bytes);
	jl_u64(j, "dropped_cleared", dropped);
	jl_int(j, "ret", 0);
	return 0;
}

/*
 * A command either parses its own arguments (run) or takes exactly one REF
 * the module owns (run_ref): the dispatcher parses and checks that REF.
 */
struct xr_command {
	const char *name;
	int min_args;
	int max_args;
	int (*run)(struct jline *j, int argc, char **argv);
	int (*run_ref)(struct jline *j, grant_ref_t ref, struct xr_ref *r);
	const char *usage;
};

#define XR_CMD(name, min, max, fn, usage)	{ name, min, max, fn, NULL, usage }
#define XR_REF_CMD(name, fn, usage)		{ name, 1, 1, NULL, fn, usage }

/* docs/exerciser.md documents each entry; tests/unit/test_exerciser_doc.py checks it. */
static const struct xr_command xr_commands[] = {
	XR_CMD("alloc", 1, 1, cmd_alloc, "alloc N"),
	XR_CMD("claim", 1, 1, cmd_claim, "claim C"),
	XR_CMD("release", 2, 2, cmd_release, "release C REF"),
	XR_CMD("free_chain", 1, 1, cmd_free_chain, "free_chain C"),
	XR_CMD("grant", 3, 3, cmd_grant, "grant REF DOMID ro|rw"),
	XR_CMD("grant_access", 2, 2, cmd_grant_access, "grant_access DOMID ro|rw"),
	XR_REF_CMD("end", cmd_end, "end REF"),
	XR_REF_CMD("try_end", cmd_try_end, "try_end REF"),
	XR_REF_CMD("end_page", cmd_end_page, "end_page REF"),
	XR_REF_CMD("free_ref", cmd_free_ref, "free_ref REF"),
	XR_REF_CMD("free_page", cmd_free_page, "free_page REF"),
	XR_CMD("callback", 2, 2, cmd_callback, "callback ID COUNT"),
	XR_CMD("cancel_callback", 1, 1, cmd_cancel_callback, "cancel_callback ID"),
	XR_CMD("exhaust", 0, 0, cmd_exhaust, "exhaust"),
	XR_CMD("free_all", 0, 0, cmd_free_all, "free_all"),
	XR_CMD("query_size", 0, 1, cmd_query_size, "query_size [DOMID]"),
	XR_CMD("setup_table", 1, 2, cmd_setup_table, "setup_table N [DOMID]"),
	XR_CMD("get_version", 0, 1, cmd_get_version, "get_version [DOMID]"),
	XR_CMD("set_version", 1, 2, cmd_set_version, "set_version V [force]"),
	XR_CMD("frames", 0, 0, cmd_frames, "frames"),
	XR_CMD("handoff", 3, 3, cmd_handoff, "handoff KEY DOMID ro|rw"),
	XR_REF_CMD("readback", cmd_readback, "readback REF"),
	XR_CMD("status", 0, 0, cmd_status, "status"),
	XR_CMD("clear", 0, 0, cmd_clear, "clear"),
};

static void log_bad_command(const char *line, const char *reason)
{
	struct jline j;

	jl_init(&j, xr.line_buf, sizeof(xr.line_buf), "bad_command");
	jl_str(&j, "line", line);
	jl_int(&j, "ret", -EINVAL);
	jl_str(&j, "reason", reason);
	xr_emit(&j);
}

/* Called with cmd_mutex held.  Returns 0, or -EINVAL for an unparsable line. */
static int xr_dispatch(char *line)
{
	char *argv[XR_MAX_TOKENS + 1], *p = line, *tok;
	const struct xr_command *cmd = NULL;
	char shown[128];
	struct jline j;
	int argc = 0, rc;
	size_t i;
	u64 ref;

	strscpy(shown, line, sizeof(shown));
	while ((tok = strsep(&p, " \t")) != NULL) {
		if (!*tok)
			continue;
		if (argc == XR_MAX_TOKENS + 1) {
			log_bad_command(shown, "too_many_arguments");
			return -EINVAL;
		}
		argv[argc++] = tok;
	}
	if (!argc) {
		log_bad_command(shown, "empty_line");
		return -EINVAL;
	}
	for (i = 0; i < ARRAY_SIZE(xr_commands); i++)
		if (!strcmp(argv[0], xr_commands[i].name))
			cmd = &xr_commands[i];
	if (!cmd) {
		log_bad_command(shown, "unknown_command");
		return -EINVAL;
	}
	if (argc - 1 < cmd->min_args || argc - 1 > cmd->max_args) {
		log_bad_command(shown, "argument_count");
		return -EINVAL;
	}
	jl_init(&j, xr.line_buf, sizeof(xr.line_buf), cmd->name);
	if (cmd->run) {
		rc = cmd->run(&j, argc, argv);
	} else if (!parse_num(argv[1], &ref)) {
		rc = XR_SYNTAX;
	} else {
		struct xr_ref *r = owned_ref(ref);

		jl_u64(&j, "ref", ref);
		rc = r ? cmd->run_ref(&j, ref, r) : refuse(&j, -EPERM, "ref_not_owned");
	}
	if (rc == XR_SYNTAX) {
		log_bad_command(shown, "bad_argument");
		return -EINVAL;
	}
	xr_emit(&j);
	return 0;
}

/* ------------------------------------------------------------------ */
/* debugfs                                                             */
/* ------------------------------------------------------------------ */

static ssize_t ctl_write(struct file *f, const char __user *ubuf, size_t count,
			 loff_t *ppos)
{
	const char *bad = NULL;
	char *line;
	size_t n;
	int ret;

	if (count > XR_CTL_MAX) {
		mutex_lock(&cmd_mutex);
		log_bad_command("", "line_too_long");
		mutex_unlock(&cmd_mutex);
		return -EINVAL;
	}
	line = memdup_user_nul(ubuf, count);
	if (IS_ERR(line))
		return PTR_ERR(line);
	n = strlen(line);
	if (n != count)
		bad = "embedded_nul";
	if (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n && line[n - 1] == '\r')
		line[--n] = '\0';
	if (strchr(line, '\n'))
		bad = "not_one_line";

	if (mutex_lock_interruptible(&cmd_mutex)) {
		kfree(line);
		return -EINTR;
	}
	if (bad) {
		log_bad_command(line, bad);
		ret = -EINVAL;
	} else {
		ret = xr_dispatch(line);
	}
	mutex_unlock(&cmd_mutex);
	kfree(line);
	return ret ? ret : count;
}

static ssize_t ctl_read(struct file *f, char __user *ubuf, size_t count, loff_t *ppos)
{
	ssize_t ret;

	mutex_lock(&cmd_mutex);
	ret = simple_read_from_buffer(ubuf, count, ppos, xr.last_result,
				      strlen(xr.last_result));
	mutex_unlock(&cmd_mutex);
	return ret;
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = ctl_read,
	.write = ctl_write,
	.llseek = default_llseek,
};

struct log_reader {
	u64 gen;
	size_t len;
	size_t ovl_len;
	char ovl[256];
};

static int log_open(struct inode *inode, struct file *f)
{
	struct log_reader *r = kzalloc(sizeof(*r), GFP_KERNEL);
	u64 dropped, first, last, t;
	unsigned long flags;

	if (!r)
		return -ENOMEM;
	spin_lock_irqsave(&xlog.lock, flags);
	r->gen = xlog.gen;
	r->len = xlog.len;
	dropped = xlog.dropped;
	first = xlog.first_dropped_seq;
	last = xlog.last_dropped_seq;
	t = xlog.first_dropped_t_ns;
	spin_unlock_irqrestore(&xlog.lock, flags);
	if (dropped)
		r->ovl_len = scnprintf(r->ovl, sizeof(r->ovl),
			"{\"seq\":%llu,\"t_ns\":%llu,\"op\":\"log_overflow\",\"dropped\":%llu,\"last_dropped_seq\":%llu,\"log_bytes\":%zu}\n",
			first, t, dropped, last, xlog.size);
	f->private_data = r;
	return 0;
}

static ssize_t log_read(struct file *f, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct log_reader *r = f->private_data;
	size_t total = r->len + r->ovl_len, pos, n, k;
	ssize_t done = 0;

	if (*ppos < 0)
		return -EINVAL;
	pos = *ppos;
	if (pos >= total || !count)
		return 0;
	n = min(count, total - pos);

	if (pos < r->len) {
		down_read(&xlog.clear_sem);
		if (xlog.gen != r->gen) {
			/* cleared since open: this reader's view is gone */
			up_read(&xlog.clear_sem);
			return 0;
		}
		k = min(n, r->len - pos);
		if (copy_to_user(ubuf, xlog.buf + pos, k)) {
			up_read(&xlog.clear_sem);
			return -EFAULT;
		}
		up_read(&xlog.clear_sem);
		done = k;
		pos += k;
		n -= k;
	}
	if (n) {
		k = min(n, r->ovl_len - (pos - r->len));
		if (copy_to_user(ubuf + done, r->ovl + (pos - r->len), k))
			return done ? done : -EFAULT;
		done += k;
		pos += k;
	}
	*ppos = pos;
	return done;
}

static int log_release(struct inode *inode, struct file *f)
{
	kfree(f->private_data);
	return 0;
}

static const struct file_operations log_fops = {
	.owner = THIS_MODULE,
	.open = log_open,
	.read = log_read,
	.release = log_release,
	.llseek = default_llseek,
};

/* ------------------------------------------------------------------ */
/* Load and unload                                                     */
/* ------------------------------------------------------------------ */

static void find_platform_pci(void)
{
	struct pci_dev *pdev;

	pdev = pci_get_device(XR_PLATFORM_VENDOR, XR_PLATFORM_DEVICE, NULL);
	if (!pdev)
		pdev = pci_get_device(XR_PLATFORM_VENDOR, XR_PLATFORM_DEVICE_XS61, NULL);
	if (!pdev)
		return;
	xr.platform_pci = true;
	xr.platform_bound = pdev->dev.driver != NULL;
	xr.bar1_start = pci_resource_start(pdev, 1);
	xr.bar1_len = pci_resource_len(pdev, 1);
	pci_dev_put(pdev);
}

static int __init xr_init(void)
{
	struct gnttab_get_version gv = { .dom = DOMID_SELF };
	struct jline j;
	unsigned int i;
	int rc;

	if (!xen_domain())
		return -ENODEV;
	find_platform_pci();
	/*
	 * An HVM guest's grant table is set up by xen-platform-pci's probe;
	 * without it the grant API would dereference an unset interface.
	 */
	if (xen_hvm_domain() && !xen_pvh_domain() && !xr.platform_bound) {
		pr_err("no xen-platform-pci device bound: grant table not initialised\n");
		return -ENODEV;
	}
	if (log_kib < 64 || log_kib > 65536) {
		pr_err("log_kib=%u out of range 64..65536\n", log_kib);
		return -EINVAL;
	}

	xr.max_frames = gnttab_max_grant_frames();
	xr.nrefs = min_t(unsigned int, xr.max_frames, XR_MAX_TRACKED_FRAMES) *
		   XR_REFS_PER_FRAME;
	xr.refs = vzalloc(array_size(xr.nrefs, sizeof(*xr.refs)));
	if (!xr.refs)
		return -ENOMEM;

	spin_lock_init(&xlog.lock);
	init_rwsem(&xlog.clear_sem);
	xlog.size = (size_t)log_kib * 1024;
	xlog.buf = vmalloc(xlog.size);
	if (!xlog.buf) {
		rc = -ENOMEM;
		goto err_refs;
	}
	for (i = 0; i < XR_NR_CALLBACKS; i++)
		xr.cbs[i].id = i;

	xr.dir = debugfs_create_dir(KBUILD_MODNAME, NULL);
	if (IS_ERR(xr.dir)) {
		rc = PTR_ERR(xr.dir);
		goto err_log;
	}
	debugfs_create_file("ctl", 0600, xr.dir, NULL, &ctl_fops);
	debugfs_create_file("log", 0400, xr.dir, NULL, &log_fops);

	rc = HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1);
	jl_init(&j, xr.line_buf, sizeof(xr.line_buf), "load");
	jl_str(&j, "module_version", "1");
	jl_u64(&j, "max_grant_frames", xr.max_frames);
	jl_u64(&j, "refs_per_frame", XR_REFS_PER_FRAME);
	jl_u64(&j, "refs_tracked", xr.nrefs);
	jl_int(&j, "gnttab_version", rc ? -1 : (s64)gv.version);
	jl_bar1(&j);
	jl_u64(&j, "log_bytes", xlog.size);
	jl_int(&j, "ret", 0);
	xr_emit(&j);
	pr_info("loaded: max_grant_frames=%u bar1=%#llx+%#llx\n", xr.max_frames,
		xr.bar1_start, xr.bar1_len);
	return 0;

err_log:
	vfree(xlog.buf);
err_refs:
	vfree(xr.refs);
	return rc;
}

static void __exit xr_exit(void)
{
	unsigned int i, chains = 0, refs = 0, pages = 0, deferred = 0;

	/* No command can start after this; running ones have finished. */
	debugfs_remove_recursive(xr.dir);

	mutex_lock(&cmd_mutex);
	for (i = 0; i < XR_NR_CALLBACKS; i++)
		gnttab_cancel_free_callback(&xr.cbs[i].cb);

	for (i = 0; i < XR_NR_CHAINS; i++) {
		if (!xr.chains[i].used)
			continue;
		gnttab_free_grant_references(xr.chains[i].head);
		chains++;
	}

	for (i = 0; i < xr.nrefs; i++) {
		struct xr_ref *r = &xr.refs[i];
		struct page *page = r->page;

		if (!(r->flags & XR_OWNED))
			continue;
		if (r->flags & XR_GRANTED) {
			if (gnttab_try_end_foreign_access(i)) {
				forget_ref(i, true);
				pages += !!page;
				refs++;
				continue;
			}
			/*
			 * Still mapped by domain r->domid: the kernel's deferred
			 * list ends it and frees ref and page once unmapped.
			 */
			pr_warn("unload: ref %u still in use by domain %u, left to the kernel's deferred end\n",
				i, r->domid);
			forget_ref(i, false);
			gnttab_end_foreign_access(i, page);
			deferred++;
			continue;
		}
		pages += !!page;
		forget_ref(i, true);
		gnttab_free_grant_reference(i);
		refs++;
	}
	mutex_unlock(&cmd_mutex);

	pr_info("unloaded: chains_freed=%u refs_freed=%u pages_freed=%u deferred_in_use=%u\n",
		chains, refs, pages, deferred);
	vfree(xlog.buf);
	vfree(xr.refs);
}

module_init(xr_init);
module_exit(xr_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION("1");
MODULE_AUTHOR("xenrig");
MODULE_DESCRIPTION("xenrig grant-table exerciser: drives the guest's grant API and GNTTABOP hypercalls from debugfs and logs every result as JSON lines");
