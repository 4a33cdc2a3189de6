// SPDX-License-Identifier: GPL-2.0
/*
 * xenrig_trace: what the guest's Xen frontends do with the grant table and
 * the blkif rings, as binary records that the harness turns into events of
 * xenrig's trace schema v1 (docs/trace-schema.md, docs/capture.md).
 *
 * Observation only: kprobes and kretprobes on the exported grant-table API
 * (and a few statics of drivers/xen/grant-table.c for what the API does
 * inside), and on xen-blkfront's queue_rq and interrupt handler, whose
 * requests and responses are read back from the shared ring page, as the
 * backend sees them.  Every handler runs with interrupts off for a few
 * microseconds, takes only this module's own locks, never sleeps and lets
 * the probed function run unchanged.
 *
 * Output: /sys/kernel/debug/xenrig_trace/{trace,stats,ctl}.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/blk-mq.h>
#include <linux/blkdev.h>
#include <linux/debugfs.h>
#include <linux/kallsyms.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include <asm/unaligned.h>

#include <xen/features.h>
#include <xen/grant_table.h>
#include <xen/interface/io/blkif.h>
#include <xen/interface/io/ring.h>
#include <xen/interface/xen.h>
#include <xen/xen.h>

#define TRACE_FORMAT_VERSION 2	/* 1: JSON lines; 2: binary records */

/* ---------------------------------------------------------------- params */

/*
 * Byte offsets inside xen-blkfront's private structs, read by the harness
 * from the DWARF of the very xen-blkfront.ko it loads
 * (harness/capture/layout.py).  -1: blkfront is not traced.
 */
static int off_ring = -1;		/* blkfront_ring_info.ring */
static int off_ring_ref = -1;		/* blkfront_ring_info.ring_ref */
static int off_irq = -1;		/* blkfront_ring_info.irq */
static int off_push = -1;		/* blkif_queue_rq: the store of req_prod */
static int off_info_rinfo = -1;		/* blkfront_info.rinfo */
static int off_info_rinfo_size = -1;	/* blkfront_info.rinfo_size */
module_param(off_ring, int, 0444);
module_param(off_ring_ref, int, 0444);
module_param(off_irq, int, 0444);
module_param(off_push, int, 0444);
module_param(off_info_rinfo, int, 0444);
module_param(off_info_rinfo_size, int, 0444);
MODULE_PARM_DESC(off_ring, "offsetof(struct blkfront_ring_info, ring) in the loaded xen-blkfront.ko");
MODULE_PARM_DESC(off_ring_ref, "offsetof(struct blkfront_ring_info, ring_ref)");
MODULE_PARM_DESC(off_irq, "offsetof(struct blkfront_ring_info, irq)");
MODULE_PARM_DESC(off_push, "offset in blkif_queue_rq of the instruction that stores sring->req_prod (RING_PUSH_REQUESTS)");
MODULE_PARM_DESC(off_info_rinfo, "offsetof(struct blkfront_info, rinfo)");
MODULE_PARM_DESC(off_info_rinfo_size, "offsetof(struct blkfront_info, rinfo_size)");

/*
 * Where blkif_queue_rq and blkif_interrupt release rinfo->ring_lock (their
 * calls to _raw_spin_unlock_irqrestore; harness/capture/layout.py).  A
 * probe there runs with the ring lock still held, so what it records is
 * ordered against every other CPU's work on that ring as the lock ordered
 * it: a push is written there with its notify decided, and an interrupt's
 * responses take their place in the order there.
 */
#define MAX_UNLOCK_SITES 4
static int off_queue_unlock[MAX_UNLOCK_SITES] = { -1, -1, -1, -1 };
static int nr_queue_unlock;
static int off_irq_unlock = -1;
module_param_array(off_queue_unlock, int, &nr_queue_unlock, 0444);
module_param(off_irq_unlock, int, 0444);
MODULE_PARM_DESC(off_queue_unlock, "offsets in blkif_queue_rq of its calls that release the ring lock");
MODULE_PARM_DESC(off_irq_unlock, "offset in blkif_interrupt of its call that releases the ring lock");

/* Address of the static gnttab_free_callback_list (/proc/kallsyms); 0: no gnt.cb_fire. */
static unsigned long sym_free_callback_list;
module_param(sym_free_callback_list, ulong, 0444);
MODULE_PARM_DESC(sym_free_callback_list, "address of gnttab_free_callback_list from /proc/kallsyms (0: no gnt.cb_fire)");

/*
 * gnttab_list_lock and the function that releases it, from /proc/kallsyms
 * (0: no `_lock` records; the harness then orders the free list's changes
 * by when their calls began, which on several CPUs is not always the
 * lock's order).
 */
static unsigned long sym_gnttab_list_lock, sym_unlock_irqrestore;
module_param(sym_gnttab_list_lock, ulong, 0444);
module_param(sym_unlock_irqrestore, ulong, 0444);
MODULE_PARM_DESC(sym_gnttab_list_lock, "address of gnttab_list_lock from /proc/kallsyms (0: no _lock records)");
MODULE_PARM_DESC(sym_unlock_irqrestore, "address of _raw_spin_unlock_irqrestore from /proc/kallsyms");

static unsigned int buf_mb = 8;	/* 1 vCPU: as many events as 16 MiB of JSON lines held */
module_param(buf_mb, uint, 0444);
MODULE_PARM_DESC(buf_mb, "trace buffer size per CPU in MiB");

static bool autostart = true;
module_param(autostart, bool, 0444);
MODULE_PARM_DESC(autostart, "trace from load on (else wait for 'start' in ctl)");

/* ---------------------------------------------------------------- records */

/*
 * The trace is binary: fixed-layout records of 64-bit words, written by the
 * probe handlers as they are (no formatting under a probe) and turned into
 * events by the harness (harness/capture/guest_records.py, which holds the
 * same layout; docs/capture.md).  Little-endian, every record 8-byte
 * aligned: a header, then the kind's words, then for a few kinds a
 * NUL-padded name.
 */
enum xr_kind {
	XK_GRANT = 1, XK_END, XK_DEFERRED_END, XK_ALLOC, XK_CLAIM, XK_RELEASE,
	XK_FREE, XK_FREE_CHAIN, XK_EXPAND, XK_CB_REQUEST, XK_CB_FIRE, XK_CB_CANCEL,
	XK_REQ, XK_PUSH, XK_RSP, XK_RING_FREE,
	XK_LOCK,	/* gnttab_list_lock about to be released (see lock sites) */
	XK_RESUME,	/* the domain came back from a suspend (save/restore, migration) */
	/* the capture's own: what it could not see or keep, and its settings */
	XK_DROPPED = 64, XK_MISSED, XK_UNSUPPORTED, XK_CONFIG,
};

#define XRF_NESTED	0x01	/* gnt.grant made inside gnttab_grant_foreign_access */
#define XRF_SEGS_UNREAD	0x02	/* blkif.req: its indirect pages could not be read */
#define XRF_REQ_EVENT	0x04	/* ring.push: the req_event word is known */

/* gnt.end modes */
enum { END_REF, END_TRY, END_END };

struct xr_head {
	u16 len;	/* bytes, this header included: a multiple of 8 */
	u8 kind;	/* enum xr_kind */
	u8 flags;	/* XRF_* */
	u32 cpu;
	s32 task;	/* pid, 0 in interrupt context */
	u32 sub;	/* orders the records of one call (`_s`) */
	u64 t;		/* ktime_get_ns() when the call began */
	u64 c;		/* the call's place in call_seq (`_c`) */
	u64 t_end;	/* when it returned (0: not recorded) */
	u64 c_end;	/* allocations: call_seq at their return (0: none) */
	u64 batch;	/* the blkif_interrupt it ran inside (0: none) */
};

/*
 * One circular buffer per CPU.  A handler builds its record in its CPU's
 * scratch area (interrupts are off in every handler, so nothing else on
 * this CPU can use it meanwhile) and copies it into its CPU's buffer; the
 * lock is shared only with the reader, so CPUs never wait on each other
 * to record.  Order across CPUs is carried by `c`, not by buffer position.
 */
#define SCRATCH_BYTES (48 * 1024)	/* a record's len is a u16 */
#define BOUNCE_BYTES (256 * 1024)

struct cpu_buf {
	spinlock_t lock;
	char *buf;
	u64 head, tail;			/* bytes ever written / consumed */
	u64 records, dropped, drop_pending;
};

static struct cpu_buf *bufs;		/* nr_cpu_ids of them */
static u64 tb_size;			/* bytes per CPU */
static char *scratch;			/* nr_cpu_ids * SCRATCH_BYTES */
static char *bounce;			/* reader's, under read_mutex */
static DEFINE_MUTEX(read_mutex);

static bool tracing;
static atomic64_t call_seq = ATOMIC64_INIT(0);
static atomic64_t anomalies = ATOMIC64_INIT(0);
static atomic64_t end_calls = ATOMIC64_INIT(0);		/* gnttab_end_foreign_access entered */
static atomic64_t end_events = ATOMIC64_INIT(0);	/* gnt.end mode "end" written */

static void tb_put(struct cpu_buf *b, const void *p, u64 n)
{
	u64 at = b->head % tb_size;
	u64 first = min(n, tb_size - at);

	memcpy(b->buf + at, p, first);
	if (first < n)
		memcpy(b->buf, p + first, n - first);
	b->head += n;
}

/* Append one record to this CPU's buffer; on a full buffer count it, and say so once space frees. */
static void commit(const struct xr_head *h)
{
	struct {
		struct xr_head h;
		u64 count;
	} marker;
	unsigned long flags;
	struct cpu_buf *b;
	u64 m = 0;

	local_irq_save(flags);
	b = &bufs[raw_smp_processor_id()];
	spin_lock(&b->lock);
	if (b->drop_pending) {
		memset(&marker, 0, sizeof(marker));
		marker.h.len = sizeof(marker);
		marker.h.kind = XK_DROPPED;
		marker.h.cpu = raw_smp_processor_id();
		marker.h.t = ktime_get_ns();
		marker.count = b->drop_pending;
		m = sizeof(marker);
	}
	if (tb_size - (b->head - b->tail) < m + h->len) {
		b->dropped++;
		b->drop_pending++;
	} else {
		if (m) {
			tb_put(b, &marker, m);
			b->drop_pending = 0;
		}
		tb_put(b, h, h->len);
		b->records++;
	}
	spin_unlock(&b->lock);
	local_irq_restore(flags);
}

/* A record being built: its header and its words. */
struct rec {
	struct xr_head *h;
	u64 *w;
	unsigned int n, cap;
	bool over;
};

static void rec_init(struct rec *r, void *storage, size_t bytes, enum xr_kind kind, u64 t)
{
	r->h = storage;
	memset(r->h, 0, sizeof(*r->h));
	r->h->kind = kind;
	r->h->t = t;
	r->h->cpu = raw_smp_processor_id();
	r->w = (u64 *)(r->h + 1);
	r->n = 0;
	r->cap = (bytes - sizeof(*r->h)) / sizeof(u64);
	r->over = false;
}

static inline void rw(struct rec *r, u64 v)
{
	if (r->n < r->cap)
		r->w[r->n++] = v;
	else
		r->over = true;
}

/* A name as NUL-padded words (at most 119 characters are kept). */
static void rec_str(struct rec *r, const char *s)
{
	char word[8];
	size_t len = strnlen(s, 119), i;

	for (i = 0; i <= len; i += 8) {
		memset(word, 0, sizeof(word));
		memcpy(word, s + i, min_t(size_t, 8, len - i));
		rw(r, get_unaligned((u64 *)word));
	}
}

static void rec_seal(struct rec *r)
{
	r->h->len = sizeof(*r->h) + r->n * sizeof(u64);
	commit(r->h);
}

/*
 * A marker record for something the capture could not see or keep (the
 * harness turns any of these into an ERROR).  Built on the stack: it may
 * be called while the CPU's scratch record is half written.
 */
static void lost(const char *what, u64 count)
{
	u64 buf[sizeof(struct xr_head) / 8 + 1 + 15];
	struct rec r;

	atomic64_inc(&anomalies);
	pr_warn_ratelimited("lost: %s\n", what);
	rec_init(&r, buf, sizeof(buf), XK_MISSED, ktime_get_ns());
	rw(&r, count);
	rec_str(&r, what);
	rec_seal(&r);
}

/*
 * What every event carries about the call it stands for.  `c` orders the
 * guest's events: one global counter taken when a call begins (at a probed
 * function's entry), so events sort in the order their calls began even
 * when the clock gives two calls the same nanosecond.
 */
struct call {
	u64 t, c, batch;
	s32 task;
	u32 cpu;
	bool on;
};

/*
 * The blkif_interrupt running on this CPU, to tag the grant calls it makes,
 * and the order its responses take (`rsp_c`, taken where it releases the
 * ring lock).  It runs with interrupts off from our entry handler to our
 * return handler (xr_entry), so nothing else on this CPU touches this.
 */
struct batch {
	u64 c, rsp_c;
	unsigned long key;
	/* the interrupt's ring and call, for its responses (on_irq_unlock) */
	void *rinfo;
	RING_IDX rsp_cons;
	u64 t;
	s32 task;
	bool on;
};
static DEFINE_PER_CPU(struct batch, cpu_batch);

static unsigned long ctx_key(void)
{
	/* A task is itself; an interrupt level stands for whatever runs at it. */
	return in_task() ? (unsigned long)current : interrupt_context_level();
}

static void call_begin_at(struct call *cl, u64 t)
{
	struct batch *b = this_cpu_ptr(&cpu_batch);

	cl->on = READ_ONCE(tracing);
	cl->c = atomic64_inc_return(&call_seq);
	cl->t = t;
	cl->task = in_task() ? task_pid_nr(current) : 0;
	cl->cpu = raw_smp_processor_id();
	cl->batch = (b->c && b->key == ctx_key()) ? b->c : 0;
}

static void call_begin(struct call *cl)
{
	call_begin_at(cl, ktime_get_ns());
}

/* A record of call `cl` in this CPU's scratch area. */
static void ev_open(struct rec *r, enum xr_kind kind, const struct call *cl)
{
	rec_init(r, scratch + (size_t)raw_smp_processor_id() * SCRATCH_BYTES, SCRATCH_BYTES,
		 kind, cl->t);
	r->h->c = cl->c;
	r->h->task = cl->task;
	r->h->cpu = cl->cpu;
	r->h->batch = cl->batch;
}

/* `sub` orders events of one call that share its `c` (0: the only one). */
static void ev_close(struct rec *r, u64 sub, u64 t_end)
{
	r->h->sub = sub;
	r->h->t_end = t_end;
	if (r->over) {
		lost("record-too-long", 1);
		return;
	}
	rec_seal(r);
}

/* ---------------------------------------------------------------- probes */

#define ARG(regs, n) regs_get_kernel_argument(regs, n)

enum group { G_CORE, G_BLKFRONT };

struct xprobe {
	const char *sym;
	const int *offset;	/* into the function, for probes inside one (-1: none there) */
	const char *site;	/* what the offset is, for stats */
	enum group group;
	bool required;		/* core: refuse to load without it */
	bool ret;		/* kretprobe */
	kprobe_pre_handler_t pre;
	kretprobe_handler_t entry, exit;
	size_t data_size;
	/* state */
	bool wanted, registered;
	int err;
	atomic_long_t hits;
	atomic_long_t irqs_on_at_return;	/* the function re-enabled interrupts itself */
	unsigned long missed_reported;
	union {
		struct kprobe kp;
		struct kretprobe rp;
	};
};

static void hit_kp(struct kprobe *p)
{
	atomic_long_inc(&container_of(p, struct xprobe, kp)->hits);
}

static void hit_ri(struct kretprobe_instance *ri)
{
	atomic_long_inc(&container_of(get_kretprobe(ri), struct xprobe, rp)->hits);
}

/*
 * Where a probed call came from, for the calls whose meaning depends on
 * their caller: the low-level end of access run by gnttab_end_foreign_access
 * (into which this kernel inlines gnttab_try_end_foreign_access) or by the
 * deferred-end timer, and a public call made by another public call.  The
 * return address is still the caller's when the entry handler runs (the
 * kretprobe hooks the return only after it).
 */
enum { R_END, R_DEFERRED, R_GRANT, NR_RANGES };
static struct {
	const char *sym;
	bool required;
	unsigned long start, end;
} ranges[NR_RANGES] = {
	[R_END] = { "gnttab_end_foreign_access", true },
	[R_DEFERRED] = { "gnttab_handle_deferred", true },
	[R_GRANT] = { "gnttab_grant_foreign_access", false },
};

static bool caller_in(struct pt_regs *regs, int r)
{
	unsigned long ret = *(unsigned long *)kernel_stack_pointer(regs);

	return ret >= ranges[r].start && ret < ranges[r].end;
}

/* Start and size of a function: a throwaway kprobe finds it, sprint_symbol sizes it. */
static int fn_extent(const char *sym, unsigned long *start, unsigned long *size)
{
	struct kprobe kp = { .symbol_name = sym };
	char buf[KSYM_SYMBOL_LEN];
	unsigned long addr, off;
	char *plus;
	int err;

	err = register_kprobe(&kp);
	if (err)
		return err;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	sprint_symbol(buf, addr);
	plus = strchr(buf, '+');
	if (!plus || sscanf(plus, "+%lx/%lx", &off, size) != 2 || !*size)
		return -EINVAL;
	*start = addr - off;
	return 0;
}

static int resolve_range(int r)
{
	unsigned long start, size;
	int err = fn_extent(ranges[r].sym, &start, &size);

	if (err)
		return err;
	ranges[r].start = start;
	ranges[r].end = start + size;
	return 0;
}

/* --- grant frames of the guest's own grants, to read indirect pages */

static unsigned long *gref_frame;	/* frame + 1, 0: not seen */
static u32 gref_max;

static void note_frame(u32 ref, unsigned long frame)
{
	if (ref < gref_max)
		WRITE_ONCE(gref_frame[ref], frame + 1);
}

/* ---------------------------------------------------------------- grant API */

static int on_grant_ref(struct kprobe *p, struct pt_regs *regs)
{
	u32 ref = ARG(regs, 0);
	unsigned int to = (u16)ARG(regs, 1);
	unsigned long frame = ARG(regs, 2);
	int ro = (int)ARG(regs, 3);
	unsigned long flags;
	struct call cl;
	struct rec r;

	local_irq_save(flags);
	hit_kp(p);
	note_frame(ref, frame);
	call_begin(&cl);
	if (cl.on) {
		ev_open(&r, XK_GRANT, &cl);
		rw(&r, ref);
		rw(&r, to);
		rw(&r, frame);
		rw(&r, !!ro);
		rw(&r, 0);	/* alloc */
		/* Made by gnttab_grant_foreign_access: its own event says it all. */
		if (caller_in(regs, R_GRANT))
			r.h->flags |= XRF_NESTED;
		ev_close(&r, 0, 0);
	}
	local_irq_restore(flags);
	return 0;
}

/*
 * A call that takes refs off the free list does so under gnttab_list_lock,
 * somewhere between its entry (`_c`) and its return (`_c_end`).  On several
 * CPUs a free on another CPU may begin inside that span and still take the
 * lock first; the harness orders the two by these bounds
 * (harness/capture/guest_trace.py, _settle_allocations).
 */
static void alloc_end(struct rec *r)
{
	r->h->c_end = atomic64_inc_return(&call_seq);
}

struct d_grant {
	struct call cl;
	unsigned int to;
	int ro;
	unsigned long frame;
};

static int in_grant_access(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_grant *d = (void *)ri->data;
	unsigned long flags;

	local_irq_save(flags);
	call_begin(&d->cl);
	d->to = (u16)ARG(regs, 0);
	d->frame = ARG(regs, 1);
	d->ro = (int)ARG(regs, 2);
	local_irq_restore(flags);
	return 0;
}

static int out_grant_access(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_grant *d = (void *)ri->data;
	int ref = (int)regs_return_value(regs);
	unsigned long flags;
	struct rec r;

	local_irq_save(flags);
	hit_ri(ri);
	if (ref >= 0)
		note_frame(ref, d->frame);
	if (d->cl.on) {
		ev_open(&r, XK_GRANT, &d->cl);
		rw(&r, (s64)ref);	/* or -errno */
		rw(&r, d->to);
		rw(&r, d->frame);
		rw(&r, !!d->ro);
		rw(&r, 1);	/* alloc */
		alloc_end(&r);
		ev_close(&r, 0, ktime_get_ns());
	}
	local_irq_restore(flags);
	return 0;
}

#define END_DEFERRED (-1)	/* not a gnt.end mode: the deferred-end timer's retry */

struct d_end {
	struct call cl;
	u32 ref;
	int mode;		/* END_REF, END_TRY, END_END or END_DEFERRED */
};

static void emit_end(struct d_end *d, int ok)
{
	struct rec r;

	if (!d->cl.on)
		return;
	if (d->mode == END_DEFERRED) {
		ev_open(&r, XK_DEFERRED_END, &d->cl);
		rw(&r, d->ref);
		rw(&r, !!ok);
	} else {
		ev_open(&r, XK_END, &d->cl);
		rw(&r, d->ref);
		rw(&r, !!ok);
		rw(&r, d->mode);
		if (d->mode == END_END)
			atomic64_inc(&end_events);
	}
	/* A try that freed the ref did so under gnttab_list_lock before this (docs/capture.md). */
	r.h->c_end = atomic64_inc_return(&call_seq);
	ev_close(&r, 0, ktime_get_ns());
}

static int in_end_common(struct kretprobe_instance *ri, struct pt_regs *regs, int mode)
{
	struct d_end *d = (void *)ri->data;
	unsigned long flags;

	local_irq_save(flags);
	call_begin(&d->cl);
	d->ref = ARG(regs, 0);
	d->mode = mode;
	local_irq_restore(flags);
	return 0;
}

static int in_end_ref(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return in_end_common(ri, regs, END_REF);
}

/* Called by gnttab_end_foreign_access (in a build that does not inline it): its `end`. */
static int in_try_end(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	return in_end_common(ri, regs, caller_in(regs, R_END) ? END_END : END_TRY);
}

/*
 * gnttab_end_foreign_access_ref_v1/_v2, reached through gnttab_interface:
 * the result of gnttab_end_foreign_access (which returns nothing) and of
 * each retry of the deferred-end timer.  Calls from the public functions
 * probed on their own are left alone.
 */
static int in_end_low(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	if (caller_in(regs, R_END))
		return in_end_common(ri, regs, END_END);
	if (caller_in(regs, R_DEFERRED))
		return in_end_common(ri, regs, END_DEFERRED);
	return 1;	/* no return handler for this call */
}

static int out_end(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	unsigned long flags;

	local_irq_save(flags);
	hit_ri(ri);
	emit_end((void *)ri->data, (int)regs_return_value(regs) != 0);
	local_irq_restore(flags);
	return 0;
}

static int on_end_foreign_access(struct kprobe *p, struct pt_regs *regs)
{
	hit_kp(p);
	atomic64_inc(&end_calls);
	return 0;
}

struct d_alloc {
	struct call cl;
	unsigned int count;
	u32 *headp;
};

static int in_alloc(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_alloc *d = (void *)ri->data;
	unsigned long flags;

	local_irq_save(flags);
	call_begin(&d->cl);
	d->count = (u16)ARG(regs, 0);
	d->headp = (u32 *)ARG(regs, 1);
	local_irq_restore(flags);
	return 0;
}

static int out_alloc(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_alloc *d = (void *)ri->data;
	int rc = (int)regs_return_value(regs);
	unsigned long flags;
	struct rec r;

	local_irq_save(flags);
	hit_ri(ri);
	if (d->cl.on) {
		ev_open(&r, XK_ALLOC, &d->cl);
		rw(&r, d->count);
		/* head: the private chain's first ref, or -errno */
		rw(&r, rc < 0 ? (s64)rc : (s64)READ_ONCE(*d->headp));
		alloc_end(&r);
		ev_close(&r, 0, ktime_get_ns());
	}
	local_irq_restore(flags);
	return 0;
}

struct d_claim {
	struct call cl;
	u32 head;
};

static int in_claim(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_claim *d = (void *)ri->data;
	unsigned long flags;

	local_irq_save(flags);
	call_begin(&d->cl);
	d->head = READ_ONCE(*(u32 *)ARG(regs, 0));
	local_irq_restore(flags);
	return 0;
}

static int out_claim(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_claim *d = (void *)ri->data;
	unsigned long flags;
	struct rec r;

	local_irq_save(flags);
	hit_ri(ri);
	if (d->cl.on) {
		ev_open(&r, XK_CLAIM, &d->cl);
		rw(&r, d->head);
		rw(&r, (s64)(int)regs_return_value(regs));
		ev_close(&r, 0, ktime_get_ns());
	}
	local_irq_restore(flags);
	return 0;
}

/* Calls with nothing to return: one event at entry. */
enum simple_kind { K_RELEASE, K_FREE, K_FREE_CHAIN, K_CB_REQUEST, K_CB_CANCEL, K_SEQ, K_RESUME };

static int on_simple(struct kprobe *p, struct pt_regs *regs, enum simple_kind k)
{
	unsigned long flags;
	struct call cl;
	struct rec r;

	local_irq_save(flags);
	hit_kp(p);
	/*
	 * xen_arch_post_suspend runs while timekeeping is suspended, where
	 * ktime_get_ns() WARNs; the fast accessor gives the time frozen at
	 * the suspend (the records are ordered by call_seq, not by time).
	 */
	if (k == K_RESUME)
		call_begin_at(&cl, ktime_get_mono_fast_ns());
	else
		call_begin(&cl);
	if (!cl.on)
		goto out;
	switch (k) {
	case K_RELEASE:
		ev_open(&r, XK_RELEASE, &cl);
		rw(&r, READ_ONCE(*(u32 *)ARG(regs, 0)));
		rw(&r, (u32)ARG(regs, 1));
		break;
	case K_FREE:
		ev_open(&r, XK_FREE, &cl);
		rw(&r, (u32)ARG(regs, 0));
		break;
	case K_FREE_CHAIN:
		ev_open(&r, XK_FREE_CHAIN, &cl);
		rw(&r, (u32)ARG(regs, 0));
		break;
	case K_CB_REQUEST:
		ev_open(&r, XK_CB_REQUEST, &cl);
		rw(&r, ARG(regs, 0));
		rw(&r, (u16)ARG(regs, 3));
		break;
	case K_CB_CANCEL:
		ev_open(&r, XK_CB_CANCEL, &cl);
		rw(&r, ARG(regs, 0));
		break;
	case K_RESUME:
		/*
		 * xen_arch_post_suspend(cancelled), in xen_suspend under
		 * stop_machine, before gnttab_resume: from here on the domain
		 * is a new one (a new grant table in Xen, its entries zero)
		 * unless the suspend was cancelled (a checkpoint: same domain).
		 */
		ev_open(&r, XK_RESUME, &cl);
		rw(&r, ARG(regs, 0) ? 1 : 0);
		break;
	case K_SEQ:
		/* Schema v1 has no kind for the *_seq calls: the trace is incomplete. */
		ev_open(&r, XK_UNSUPPORTED, &cl);
		rec_str(&r, container_of(p, struct xprobe, kp)->sym);
		break;
	}
	ev_close(&r, 0, 0);
out:
	local_irq_restore(flags);
	return 0;
}

static int on_release(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_RELEASE);
}

static int on_free(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_FREE);
}

static int on_free_chain(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_FREE_CHAIN);
}

static int on_cb_request(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_CB_REQUEST);
}

static int on_cb_cancel(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_CB_CANCEL);
}

static int on_seq(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_SEQ);
}

static int on_resume(struct kprobe *p, struct pt_regs *regs)
{
	return on_simple(p, regs, K_RESUME);
}

/*
 * Growth: gnttab_expand(req_entries) maps the new frames with
 * gnttab_map(cur, cur + extra - 1) and then grows the free list.  Both run
 * under gnttab_list_lock with interrupts off, so a per-CPU note carries
 * gnttab_map's range to gnttab_expand's return.
 */
struct expand_note {
	bool active, seen;
	u32 start, end;
};
static DEFINE_PER_CPU(struct expand_note, cpu_expand);

static int in_expand(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct expand_note *n = this_cpu_ptr(&cpu_expand);
	unsigned long flags;

	local_irq_save(flags);
	call_begin((void *)ri->data);
	n->active = true;
	n->seen = false;
	local_irq_restore(flags);
	return 0;
}

static int on_map(struct kprobe *p, struct pt_regs *regs)
{
	struct expand_note *n = this_cpu_ptr(&cpu_expand);

	hit_kp(p);
	if (n->active) {
		n->start = ARG(regs, 0);
		n->end = ARG(regs, 1);
		n->seen = true;
	}
	return 0;
}

static int out_expand(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct expand_note *n = this_cpu_ptr(&cpu_expand);
	struct call *cl = (void *)ri->data;
	int rc = (int)regs_return_value(regs);
	unsigned long flags;
	struct rec r;

	local_irq_save(flags);
	hit_ri(ri);
	n->active = false;
	/* rc != 0: Linux's table did not grow (-ENOSPC past the maximum, -ENOMEM). */
	if (rc == 0 && cl->on) {
		if (n->seen) {
			ev_open(&r, XK_EXPAND, cl);
			rw(&r, n->start);
			rw(&r, n->end + 1);
			ev_close(&r, 0, ktime_get_ns());
		} else {
			lost("gnt.expand-frames-unknown", 1);
		}
	}
	local_irq_restore(flags);
	return 0;
}

/*
 * Free callbacks: do_free_callbacks runs (under gnttab_list_lock) every
 * callback whose count is now free and unlinks it, and puts the others back
 * on the list.  A callback on the list at entry and gone at return ran.
 */
#define MAX_CBS 32

struct d_cbs {
	struct call cl;
	unsigned int n;
	bool overflow;
	struct gnttab_free_callback *cb[MAX_CBS];
};

static unsigned int read_cb_list(struct gnttab_free_callback **out, bool *overflow)
{
	struct gnttab_free_callback *cb;
	unsigned int n = 0;

	*overflow = false;
	if (copy_from_kernel_nofault(&cb, (void *)sym_free_callback_list, sizeof(cb)))
		return 0;
	while (cb) {
		if (n == MAX_CBS) {
			*overflow = true;
			break;
		}
		out[n++] = cb;
		if (copy_from_kernel_nofault(&cb, &cb->next, sizeof(cb)))
			break;
	}
	return n;
}

static int in_cbs(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_cbs *d = (void *)ri->data;
	unsigned long flags;

	local_irq_save(flags);
	call_begin(&d->cl);
	d->n = read_cb_list(d->cb, &d->overflow);
	local_irq_restore(flags);
	return 0;
}

static int out_cbs(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_cbs *d = (void *)ri->data;
	struct gnttab_free_callback *left[MAX_CBS];
	unsigned int nleft, i, j, sub = 0;
	unsigned long flags;
	bool overflow;
	struct rec r;

	local_irq_save(flags);
	hit_ri(ri);
	nleft = read_cb_list(left, &overflow);
	if (!d->cl.on)
		goto out;
	if (d->overflow || overflow)
		lost("gnt.cb_fire-list-too-long", 1);
	for (i = 0; i < d->n; i++) {
		for (j = 0; j < nleft && left[j] != d->cb[i]; j++)
			;
		if (j < nleft)
			continue;
		ev_open(&r, XK_CB_FIRE, &d->cl);
		rw(&r, (unsigned long)d->cb[i]);
		ev_close(&r, ++sub, ktime_get_ns());
	}
out:
	local_irq_restore(flags);
	return 0;
}

/* ---------------------------------------------------------------- blkfront */

/*
 * What this module knows of each blkfront ring.  `emitted` is the req_prod
 * up to which pushes are in the trace (ring.push lines); `reqs_done` the
 * index up to which requests are.  Requests are read at the push site
 * itself, just before the store that makes them visible to the backend:
 * read any later (at blkif_queue_rq's return) and a backend on another CPU
 * may already have answered, overwriting the slot with its response (seen
 * in a real capture: a 1-segment read came out as a 0-segment request).
 */
#define MAX_RINGS 64

struct ring_state {
	void *rinfo;
	struct blkif_sring *sring;
	u32 ref0, irq;
	atomic_t notifies;	/* notify_remote_via_irq(irq) calls */
	int notify_snap;	/* notifies at the pending push */
	RING_IDX req_event_snap;	/* sring->req_event at the pending push */
	/* A push read at the push site, its ring.push line not written yet: the
	 * notify decision comes after the push, so the line is written where
	 * blkif_queue_rq releases the ring lock (its `_c` is taken at the push). */
	bool push_pending;
	RING_IDX push_old, push_new;
	u64 push_c, push_t;
	bool emitted_valid;
	RING_IDX emitted;
	RING_IDX reqs_done;
};

static DEFINE_PER_CPU(void *, cur_rinfo);	/* the ring blkif_queue_rq works on */

static struct ring_state rings[MAX_RINGS];
static int nr_rings;
static DEFINE_SPINLOCK(rings_lock);

/* 16 ring pages (XENBUS_MAX_RING_GRANTS) hold __CONST_RING_SIZE = 512 blkif entries. */
#define MAX_RING_ENTS 512

/* A ring as blkfront holds it (struct blkif_front_ring is public ABI). */
struct rinfo_view {
	struct blkif_front_ring fr;
	u32 ref0, irq;
};

static bool blkfront_layout_given(void)
{
	return off_ring >= 0 && off_ring_ref >= 0 && off_irq >= 0 &&
	       off_info_rinfo >= 0 && off_info_rinfo_size >= 0 && off_push >= 0 &&
	       nr_queue_unlock >= 1 && off_irq_unlock >= 0;
}

enum { RINFO_BAD = -1, RINFO_NO_RING = 0, RINFO_OK = 1 };

static int read_rinfo(void *rinfo, struct rinfo_view *v)
{
	if (!rinfo ||
	    copy_from_kernel_nofault(&v->fr, rinfo + off_ring, sizeof(v->fr)) ||
	    copy_from_kernel_nofault(&v->ref0, rinfo + off_ring_ref, sizeof(v->ref0)) ||
	    copy_from_kernel_nofault(&v->irq, rinfo + off_irq, sizeof(v->irq)))
		return RINFO_BAD;
	/* Torn down (xenbus_teardown_ring clears it): an interrupt may still come. */
	if (!v->fr.sring)
		return RINFO_NO_RING;
	/* A wrong layout shows here: refuse what cannot be a ring. */
	if (!virt_addr_valid(v->fr.sring) || !v->fr.nr_ents || !is_power_of_2(v->fr.nr_ents) ||
	    v->fr.nr_ents > MAX_RING_ENTS)
		return RINFO_BAD;
	return RINFO_OK;
}

/* The ring, or why not: a bad layout is reported, a torn-down ring is not. */
static bool ring_view(void *rinfo, struct rinfo_view *v, const char *where)
{
	int r = read_rinfo(rinfo, v);

	if (r == RINFO_BAD)
		lost(where, 1);
	return r == RINFO_OK;
}

/* blkif_queue_rq(hctx, qd): rinfo = info->rinfo + hctx->queue_num * info->rinfo_size */
static void *rinfo_of_hctx(struct blk_mq_hw_ctx *hctx)
{
	struct request_queue *q;
	unsigned int qid, size;
	void *info, *base;

	if (copy_from_kernel_nofault(&q, &hctx->queue, sizeof(q)) ||
	    copy_from_kernel_nofault(&qid, &hctx->queue_num, sizeof(qid)) ||
	    copy_from_kernel_nofault(&info, &q->queuedata, sizeof(info)) || !info ||
	    copy_from_kernel_nofault(&base, info + off_info_rinfo, sizeof(base)) ||
	    copy_from_kernel_nofault(&size, info + off_info_rinfo_size, sizeof(size)))
		return NULL;
	return base + (size_t)qid * size;
}

/* Under rings_lock.  A ring set up again (new page or ref) starts afresh. */
static struct ring_state *ring_get(void *rinfo, const struct rinfo_view *v)
{
	struct ring_state *rs = NULL;
	int i;

	for (i = 0; i < nr_rings; i++)
		if (rings[i].rinfo == rinfo)
			rs = &rings[i];
	/* A slot a torn-down ring left (on_free_ring) is taken first. */
	for (i = 0; !rs && i < nr_rings; i++)
		if (!rings[i].rinfo) {
			rs = &rings[i];
			memset(rs, 0, sizeof(*rs));
			rs->rinfo = rinfo;
		}
	if (!rs) {
		if (nr_rings == MAX_RINGS)
			return NULL;
		rs = &rings[nr_rings];
		memset(rs, 0, sizeof(*rs));
		rs->rinfo = rinfo;
		WRITE_ONCE(nr_rings, nr_rings + 1);
	}
	if (rs->sring != v->fr.sring || rs->ref0 != v->ref0) {
		rs->sring = v->fr.sring;
		rs->ref0 = v->ref0;
		rs->emitted_valid = false;
		rs->push_pending = false;
	}
	WRITE_ONCE(rs->irq, v->irq);
	if (!rs->emitted_valid) {
		rs->emitted = READ_ONCE(v->fr.sring->req_prod);
		rs->reqs_done = rs->emitted;
		rs->emitted_valid = true;
	}
	return rs;
}

static int on_notify(struct kprobe *p, struct pt_regs *regs)
{
	u32 irq = ARG(regs, 0);
	int i, n = READ_ONCE(nr_rings);

	hit_kp(p);
	for (i = 0; i < n; i++)
		if (READ_ONCE(rings[i].irq) == irq && rings[i].rinfo)
			atomic_inc(&rings[i].notifies);
	return 0;
}

/* A segment as one word: gref, then first and last sector. */
static inline u64 seg_word(u32 gref, u8 first, u8 last)
{
	return gref | (u64)first << 32 | (u64)last << 40;
}

/*
 * Segments of an indirect request, from the pages its indirect grefs grant:
 * how many were written, or false with none written when a page cannot be
 * read.
 */
static bool read_indirect_segs(struct rec *r, const struct blkif_request_indirect *ind,
			       unsigned int pages, unsigned int *nsegs)
{
	const struct blkif_request_segment *seg;
	unsigned int k, i, n, left = ind->nr_segments;
	unsigned int mark = r->n;
	unsigned long frame;

	for (k = 0; k < pages; k++) {
		u32 gref = ind->indirect_grefs[k];

		frame = gref < gref_max ? READ_ONCE(gref_frame[gref]) : 0;
		if (!frame)
			goto unreadable;	/* granted before this module was loaded */
		frame--;
		/* HVM: the grant names a guest frame, which is our pfn. */
		if (!pfn_valid(frame))
			goto unreadable;
		seg = page_address(pfn_to_page(frame));
		n = min_t(unsigned int, left, XEN_PAGE_SIZE / sizeof(*seg));
		for (i = 0; i < n; i++)
			rw(r, seg_word(READ_ONCE(seg[i].gref), READ_ONCE(seg[i].first_sect),
				       READ_ONCE(seg[i].last_sect)));
		left -= n;
	}
	if (!r->over) {
		*nsegs = r->n - mark;
		return true;
	}
unreadable:
	/* Leave segs empty (the schema allows it for indirect requests). */
	r->n = mark;
	r->over = false;
	*nsegs = 0;
	return false;
}

/*
 * blkif.req words: ring, idx, op, id, sector, aux (indirect_op, or a
 * discard's nr_sectors), nr_segments as the request says, then how many
 * indirect grefs and segments follow, and those.
 */
enum { RQ_RING, RQ_IDX, RQ_OP, RQ_ID, RQ_SECTOR, RQ_AUX, RQ_NR_SEGMENTS, RQ_N_IGREFS, RQ_N_SEGS, RQ_WORDS };

static void emit_request(const struct rinfo_view *v, RING_IDX idx)
{
	struct blkif_request req;
	struct call cl;
	struct rec r;
	unsigned int i, n = 0;
	u64 *w;

	memcpy(&req, RING_GET_REQUEST(&v->fr, idx), sizeof(req));
	call_begin(&cl);
	ev_open(&r, XK_REQ, &cl);
	w = r.w;
	for (i = 0; i < RQ_WORDS; i++)
		rw(&r, 0);
	w[RQ_RING] = v->ref0;
	w[RQ_IDX] = idx;
	w[RQ_OP] = req.operation;
	switch (req.operation) {
	case BLKIF_OP_INDIRECT: {
		const struct blkif_request_indirect *ind = &req.u.indirect;
		unsigned int pages = DIV_ROUND_UP(ind->nr_segments,
						  XEN_PAGE_SIZE / sizeof(struct blkif_request_segment));

		pages = min_t(unsigned int, pages, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
		w[RQ_ID] = ind->id;
		w[RQ_SECTOR] = ind->sector_number;
		w[RQ_AUX] = ind->indirect_op;
		w[RQ_NR_SEGMENTS] = ind->nr_segments;
		w[RQ_N_IGREFS] = pages;
		for (i = 0; i < pages; i++)
			rw(&r, ind->indirect_grefs[i]);
		if (!read_indirect_segs(&r, ind, pages, &n))
			r.h->flags |= XRF_SEGS_UNREAD;
		w[RQ_N_SEGS] = n;
		break;
	}
	case BLKIF_OP_DISCARD:
		w[RQ_ID] = req.u.discard.id;
		w[RQ_SECTOR] = req.u.discard.sector_number;
		w[RQ_AUX] = req.u.discard.nr_sectors;
		break;
	case BLKIF_OP_READ:
	case BLKIF_OP_WRITE:
	case BLKIF_OP_WRITE_BARRIER:
	case BLKIF_OP_FLUSH_DISKCACHE:
		n = min_t(unsigned int, req.u.rw.nr_segments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
		w[RQ_ID] = req.u.rw.id;
		w[RQ_SECTOR] = req.u.rw.sector_number;
		w[RQ_NR_SEGMENTS] = req.u.rw.nr_segments;	/* more than n: more than a request can hold */
		w[RQ_N_SEGS] = n;
		for (i = 0; i < n; i++)
			rw(&r, seg_word(req.u.rw.seg[i].gref, req.u.rw.seg[i].first_sect,
					req.u.rw.seg[i].last_sect));
		break;
	default:
		w[RQ_ID] = req.u.other.id;
		break;
	}
	ev_close(&r, 0, 0);
}

/* Under rings_lock: write the ring.push record of a push read at the push site. */
static void flush_push(struct ring_state *rs, const struct rinfo_view *v)
{
	struct call cl = { 0 };
	struct rec r;

	if (!rs->push_pending)
		return;
	rs->push_pending = false;
	rs->emitted = rs->push_new;
	cl.on = READ_ONCE(tracing);
	if (!cl.on)
		return;
	cl.c = rs->push_c;
	cl.t = rs->push_t;
	cl.task = in_task() ? task_pid_nr(current) : 0;
	cl.cpu = raw_smp_processor_id();
	ev_open(&r, XK_PUSH, &cl);
	rw(&r, v->ref0);
	rw(&r, rs->push_old);
	rw(&r, rs->push_new);
	rw(&r, atomic_read(&rs->notifies) != rs->notify_snap);
	/*
	 * The frontend decided to notify with the req_event it read right after
	 * the push, which we cannot see (the push is inlined).  The backend only
	 * moves req_event forward; if it did not move since the push site,
	 * the frontend used this value.  Otherwise the value it used is unknown
	 * and the field is left out (the model then does not judge this notify).
	 */
	rw(&r, rs->req_event_snap);
	if (READ_ONCE(v->fr.sring->req_event) == rs->req_event_snap)
		r.h->flags |= XRF_REQ_EVENT;
	rw(&r, (unsigned long)rs->rinfo);
	ev_close(&r, 0, 0);
}

/*
 * At the store of req_prod in blkif_queue_rq (the RING_PUSH_REQUESTS of the
 * inlined flush_requests): req_prod_pvt is the new producer index, the
 * shared req_prod still the old one, and the requests in between are written
 * but not yet visible to the backend.  Read them now.
 */
static int on_push(struct kprobe *p, struct pt_regs *regs)
{
	void *rinfo = this_cpu_read(cur_rinfo);
	struct rinfo_view v;
	struct ring_state *rs;
	RING_IDX idx, pvt, old;

	hit_kp(p);
	if (!rinfo || !ring_view(rinfo, &v, "push-site-layout"))
		return 0;
	spin_lock(&rings_lock);
	rs = ring_get(rinfo, &v);
	if (rs) {
		flush_push(rs, &v);
		pvt = v.fr.req_prod_pvt;
		old = READ_ONCE(v.fr.sring->req_prod);
		if (pvt - rs->reqs_done > v.fr.nr_ents) {
			lost("blkif.push-site-jump", pvt - rs->reqs_done);
		} else if (READ_ONCE(tracing)) {
			for (idx = rs->reqs_done; idx != pvt; idx++)
				emit_request(&v, idx);
		}
		rs->reqs_done = pvt;
		rs->push_pending = true;
		rs->push_old = old;
		rs->push_new = pvt;
		rs->push_c = atomic64_inc_return(&call_seq);
		rs->push_t = ktime_get_ns();
		/* Under the ring lock: only this call can notify for this ring now. */
		rs->notify_snap = atomic_read(&rs->notifies);
		rs->req_event_snap = READ_ONCE(v.fr.sring->req_event);
	}
	spin_unlock(&rings_lock);
	return 0;
}

/*
 * blkif_queue_rq releases the ring lock: its push (if it made one) is
 * complete, notify included.  Writing the line any earlier, e.g. when
 * another CPU's interrupt looks at the ring, could catch it between the
 * push and the notify; any later, and another CPU could notify this ring.
 */
static int on_queue_unlock(struct kprobe *p, struct pt_regs *regs)
{
	void *rinfo = this_cpu_read(cur_rinfo);
	struct rinfo_view v;
	int i;

	hit_kp(p);
	this_cpu_write(cur_rinfo, NULL);
	if (!rinfo || !ring_view(rinfo, &v, "queue-unlock-layout"))
		return 0;
	spin_lock(&rings_lock);
	for (i = 0; i < nr_rings; i++)
		if (rings[i].rinfo == rinfo)
			flush_push(&rings[i], &v);
	spin_unlock(&rings_lock);
	return 0;
}

/*
 * blkif_free_ring(rinfo): blkfront tears a ring down (device removed, module
 * unloaded, or the ring re-made on resume).  Every grant of the ring is ended
 * after this point, the ring pages last: the model holds the driver to that.
 * The ring's state here is dropped, so a ring later set up in the same
 * memory starts afresh (rinfo arrays are freed and allocated again).
 */
static int on_free_ring(struct kprobe *p, struct pt_regs *regs)
{
	void *rinfo = (void *)ARG(regs, 0);
	struct rinfo_view v;
	unsigned long flags;
	struct call cl;
	struct rec r;
	int i;

	local_irq_save(flags);
	hit_kp(p);
	if (!ring_view(rinfo, &v, "free-ring-layout"))
		goto out;	/* never set up (a vbd that never connected): nothing to end */
	spin_lock(&rings_lock);
	for (i = 0; i < nr_rings; i++)
		if (rings[i].rinfo == rinfo) {
			flush_push(&rings[i], &v);
			rings[i].rinfo = NULL;
			WRITE_ONCE(rings[i].irq, 0);
		}
	spin_unlock(&rings_lock);
	call_begin(&cl);
	if (!cl.on)
		goto out;
	ev_open(&r, XK_RING_FREE, &cl);
	rw(&r, v.ref0);
	rw(&r, v.fr.req_prod_pvt);
	rw(&r, v.fr.rsp_cons);
	ev_close(&r, 0, 0);
out:
	local_irq_restore(flags);
	return 0;
}


/*
 * blkif_queue_rq is probed at its entry with a plain kprobe, not a
 * kretprobe: kretprobes sit on the function's ftrace site, where the kernel
 * runs the handler with interrupts on while marking a probe as running, and
 * an interrupt taken there loses every probe hit inside it (seen: one whole
 * blkif_interrupt with its 594 grant ends).  Plain probes go past the fentry
 * call (see probe_register), where int3 keeps interrupts off.
 */
static int on_queue_rq(struct kprobe *p, struct pt_regs *regs)
{
	void *rinfo = rinfo_of_hctx((struct blk_mq_hw_ctx *)ARG(regs, 0));
	struct rinfo_view v;
	struct ring_state *rs;

	hit_kp(p);
	this_cpu_write(cur_rinfo, NULL);
	if (!ring_view(rinfo, &v, "blkif_queue_rq-layout"))
		return 0;
	/*
	 * Outside the ring lock: another CPU may be between its push and its
	 * notify on this ring, so nothing of the ring's state is touched here.
	 */
	spin_lock(&rings_lock);
	rs = ring_get(rinfo, &v);
	if (rs)
		this_cpu_write(cur_rinfo, rinfo);
	spin_unlock(&rings_lock);
	if (!rs)
		lost("blkif-too-many-rings", 1);
	return 0;
}


struct d_irq {
	struct call cl;
	void *rinfo;
	RING_IDX rsp_cons;
};

static int in_blk_irq(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_irq *d = (void *)ri->data;
	struct batch *b = this_cpu_ptr(&cpu_batch);
	struct rinfo_view v;
	unsigned long flags;
	int skip = 1;

	local_irq_save(flags);
	d->rinfo = (void *)ARG(regs, 1);	/* dev_id */
	if (!ring_view(d->rinfo, &v, "blkif_interrupt-layout"))
		goto out;
	/* Known from here on (its irq counts notifies); a push another CPU
	 * has pending is its own to write (on_queue_unlock). */
	spin_lock(&rings_lock);
	ring_get(d->rinfo, &v);
	spin_unlock(&rings_lock);
	d->rsp_cons = v.fr.rsp_cons;
	call_begin(&d->cl);
	b->c = d->cl.c;
	b->rsp_c = 0;
	b->key = ctx_key();
	b->rinfo = d->rinfo;
	b->rsp_cons = v.fr.rsp_cons;
	b->t = d->cl.t;
	b->task = d->cl.task;
	b->on = d->cl.on;
	skip = 0;
out:
	local_irq_restore(flags);
	return skip;
}

/*
 * blkif_interrupt releases the ring lock: its responses are all consumed,
 * and their slots are still as the backend wrote them.  Read them here:
 * once the lock is free, blkif_queue_rq on another CPU writes new requests
 * into those very slots (seen on 4 vCPUs when they were read at the
 * handler's return: responses with ids that were request bytes).  They
 * carry the `c` taken here (sub-ordered by index), so each sorts after the
 * push of its request even when that push came on another CPU after the
 * interrupt began, and `_batch`, the interrupt's own `c`, as do the grant
 * calls the handler made: the harness puts each response just before the
 * first end of its request's grants (docs/capture.md).
 */
static int on_irq_unlock(struct kprobe *p, struct pt_regs *regs)
{
	struct batch *b = this_cpu_ptr(&cpu_batch);
	struct blkif_response rsp;
	struct rinfo_view v;
	struct call cl = { 0 };
	RING_IDX idx;
	u64 sub = 0;
	struct rec r;

	hit_kp(p);
	if (!b->c)
		return 0;
	b->rsp_c = atomic64_inc_return(&call_seq);
	if (!b->on || !ring_view(b->rinfo, &v, "blkif_interrupt-layout") || v.fr.rsp_cons == b->rsp_cons)
		return 0;
	if (v.fr.rsp_cons - b->rsp_cons > v.fr.nr_ents) {
		lost("blkif.rsp-cons-jump", v.fr.rsp_cons - b->rsp_cons);
		return 0;
	}
	cl.t = b->t;
	cl.c = b->rsp_c;
	cl.batch = b->c;
	cl.task = b->task;
	cl.cpu = raw_smp_processor_id();
	for (idx = b->rsp_cons; idx != v.fr.rsp_cons; idx++) {
		memcpy(&rsp, RING_GET_RESPONSE(&v.fr, idx), sizeof(rsp));
		ev_open(&r, XK_RSP, &cl);
		rw(&r, v.ref0);
		rw(&r, idx);
		rw(&r, rsp.id);
		rw(&r, rsp.operation);
		rw(&r, (s64)rsp.status);
		ev_close(&r, ++sub, 0);
	}
	return 0;
}

/* The handler returns: responses it consumed without passing the unlock were not read. */
static int out_blk_irq(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct d_irq *d = (void *)ri->data;
	struct batch *b = this_cpu_ptr(&cpu_batch);
	struct rinfo_view v;
	unsigned long flags;
	u64 rsp_c;

	local_irq_save(flags);
	hit_ri(ri);
	rsp_c = b->rsp_c;
	b->c = 0;
	b->rsp_c = 0;
	if (d->cl.on && !rsp_c && read_rinfo(d->rinfo, &v) == RINFO_OK && v.fr.rsp_cons != d->rsp_cons)
		lost("blkif_interrupt-unlock-unseen", v.fr.rsp_cons - d->rsp_cons);
	local_irq_restore(flags);
	return 0;
}

/* ---------------------------------------------------------------- gnttab_list_lock */

/*
 * The free list changes only under gnttab_list_lock, and its order is the
 * lock's: a free and an allocation on two CPUs may begin (`c`) in one
 * order and take the lock in the other.  A probe on each call of
 * _raw_spin_unlock_irqrestore in the grant-table functions runs with the
 * lock still held (its first argument names the lock: only this one
 * counts) and writes a `_lock` record with a number from call_seq.  The
 * harness gives each to the innermost traced call open on that CPU and
 * orders the free list's changes by it (docs/capture.md).
 *
 * The call sites are found in this kernel's own code at load: a call or
 * jump instruction (E8 or E9, rel32) whose target is the unlock function
 * (a function that ends by unlocking jumps to it).  kprobes
 * checks that each is an instruction boundary, so a byte that only looks
 * like one is refused, not probed.
 */
#define MAX_LOCK_SITES 24
#define MAX_FN_BYTES 4096

static const char *const lock_fns[] = {
	"put_free_entry", "get_free_entries", "gnttab_grant_foreign_access",
	"gnttab_alloc_grant_references", "gnttab_free_grant_reference",
	"gnttab_free_grant_references", "gnttab_try_end_foreign_access",
	"gnttab_end_foreign_access", "gnttab_handle_deferred",
	"gnttab_request_free_callback", "gnttab_cancel_free_callback",
};

struct lock_site {
	struct kprobe kp;
	unsigned long missed_reported;
};
static struct lock_site lock_sites[MAX_LOCK_SITES];
static int nr_lock_sites, lock_sites_refused;
static atomic_long_t lock_hits = ATOMIC_LONG_INIT(0);

static int on_list_unlock(struct kprobe *p, struct pt_regs *regs)
{
	u64 buf[sizeof(struct xr_head) / 8];
	struct rec r;

	if (regs->di != sym_gnttab_list_lock || !READ_ONCE(tracing))
		return 0;
	atomic_long_inc(&lock_hits);
	rec_init(&r, buf, sizeof(buf), XK_LOCK, ktime_get_ns());
	r.h->c = atomic64_inc_return(&call_seq);
	r.h->task = in_task() ? task_pid_nr(current) : 0;
	rec_seal(&r);
	return 0;
}

static void lock_sites_register(void)
{
	static u8 code[MAX_FN_BYTES];
	unsigned long start, size, at;
	int f, err;

	for (f = 0; f < ARRAY_SIZE(lock_fns); f++) {
		if (fn_extent(lock_fns[f], &start, &size))
			continue;	/* inlined into its callers in this build */
		size = min(size, (unsigned long)MAX_FN_BYTES);
		if (copy_from_kernel_nofault(code, (void *)start, size))
			continue;
		for (at = 0; at + 5 <= size; at++) {
			struct lock_site *ls;

			/* call, or jmp where the unlock ends a void function (a sibling call) */
			if ((code[at] != 0xe8 && code[at] != 0xe9) ||
			    start + at + 5 + (long)get_unaligned((s32 *)&code[at + 1]) != sym_unlock_irqrestore)
				continue;
			if (nr_lock_sites == MAX_LOCK_SITES) {
				lock_sites_refused++;
				continue;
			}
			ls = &lock_sites[nr_lock_sites];
			memset(ls, 0, sizeof(*ls));
			ls->kp.symbol_name = lock_fns[f];
			ls->kp.offset = at;
			ls->kp.pre_handler = on_list_unlock;
			err = register_kprobe(&ls->kp);
			if (err) {
				lock_sites_refused++;
				continue;
			}
			nr_lock_sites++;
		}
	}
}

static void lock_sites_unregister(void)
{
	int i;

	for (i = 0; i < nr_lock_sites; i++)
		unregister_kprobe(&lock_sites[i].kp);
	nr_lock_sites = 0;
}

/* ---------------------------------------------------------------- probe table */

#define KP(s, g, req, h) { .sym = s, .group = g, .required = req, .pre = h }
#define KRP(s, g, req, en, ex, T) \
	{ .sym = s, .group = g, .required = req, .ret = true, .entry = en, .exit = ex, \
	  .data_size = sizeof(T) }

static struct xprobe probes[] = {
	KP("gnttab_grant_foreign_access_ref", G_CORE, true, on_grant_ref),
	KRP("gnttab_grant_foreign_access", G_CORE, true, in_grant_access, out_grant_access,
	    struct d_grant),
	KRP("gnttab_end_foreign_access_ref", G_CORE, true, in_end_ref, out_end, struct d_end),
	KRP("gnttab_try_end_foreign_access", G_CORE, true, in_try_end, out_end, struct d_end),
	KRP("gnttab_end_foreign_access_ref_v1", G_CORE, true, in_end_low, out_end, struct d_end),
	KRP("gnttab_end_foreign_access_ref_v2", G_CORE, false, in_end_low, out_end, struct d_end),
	KP("gnttab_end_foreign_access", G_CORE, true, on_end_foreign_access),
	KRP("gnttab_alloc_grant_references", G_CORE, true, in_alloc, out_alloc, struct d_alloc),
	KRP("gnttab_claim_grant_reference", G_CORE, true, in_claim, out_claim, struct d_claim),
	KP("gnttab_release_grant_reference", G_CORE, true, on_release),
	KP("gnttab_free_grant_reference", G_CORE, true, on_free),
	KP("gnttab_free_grant_references", G_CORE, true, on_free_chain),
	KP("gnttab_request_free_callback", G_CORE, true, on_cb_request),
	KP("gnttab_cancel_free_callback", G_CORE, true, on_cb_cancel),
	KP("gnttab_alloc_grant_reference_seq", G_CORE, false, on_seq),
	KP("gnttab_free_grant_reference_seq", G_CORE, false, on_seq),
	KRP("gnttab_expand", G_CORE, true, in_expand, out_expand, struct call),
	KP("gnttab_map", G_CORE, true, on_map),
	/* x86's; a kernel without it traces no save/restore (its stats say so) */
	KP("xen_arch_post_suspend", G_CORE, false, on_resume),
	/* wanted only with sym_free_callback_list */
	KRP("do_free_callbacks", G_CORE, true, in_cbs, out_cbs, struct d_cbs),
	/* wanted only with the blkfront layout */
	KP("notify_remote_via_irq", G_CORE, true, on_notify),
	KP("xen_blkfront:blkif_queue_rq", G_BLKFRONT, false, on_queue_rq),
	{ .sym = "xen_blkfront:blkif_queue_rq", .offset = &off_push, .site = "+push",
	  .group = G_BLKFRONT, .required = false, .pre = on_push },
#define QUEUE_UNLOCK(i) \
	{ .sym = "xen_blkfront:blkif_queue_rq", .offset = &off_queue_unlock[i], \
	  .site = "+unlock" #i, .group = G_BLKFRONT, .required = false, .pre = on_queue_unlock }
	QUEUE_UNLOCK(0), QUEUE_UNLOCK(1), QUEUE_UNLOCK(2), QUEUE_UNLOCK(3),
	{ .sym = "xen_blkfront:blkif_interrupt", .offset = &off_irq_unlock, .site = "+unlock",
	  .group = G_BLKFRONT, .required = false, .pre = on_irq_unlock },
	KRP("xen_blkfront:blkif_interrupt", G_BLKFRONT, false, in_blk_irq, out_blk_irq,
	    struct d_irq),
	KP("xen_blkfront:blkif_free_ring", G_BLKFRONT, false, on_free_ring),
};

static DEFINE_MUTEX(probe_mutex);
static const char *blkfront_state = "disabled: no layout offsets given";

/*
 * No probe may be skipped.  The kernel marks a probe as running on this CPU
 * while it runs a kretprobe's return handler, with interrupts as the probed
 * code had them: a blkfront interrupt arriving then (under TCG: at the very
 * first instruction of our handler, a translation-block boundary) hits our
 * probes in blkif_interrupt and in the grant calls it makes, and the kernel
 * skips those hits (seen: 231 of 4,199 gnttab_try_end_foreign_access calls
 * lost in one run; 33 with only the handlers masked).  So:
 *  - every handler runs with local interrupts off;
 *  - a function under a kretprobe runs, from our entry handler to our return
 *    handler, with interrupts held off (cleared in the flags the entry
 *    handler returns to; the return trampoline's popf gives them back).
 * The probed functions already hold spinlocks with interrupts saved for most
 * of their length (the grant lock, blkfront's ring lock); what the capture
 * changes is when a pending interrupt is taken, not what the code does.
 */
static int xr_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct xprobe *x = container_of(p, struct xprobe, kp);
	unsigned long flags;
	int ret;

	local_irq_save(flags);
	ret = x->pre(p, regs);
	local_irq_restore(flags);
	return ret;
}

static unsigned long *irq_word(struct kretprobe_instance *ri, struct xprobe *x)
{
	return (unsigned long *)(ri->data + ALIGN(x->data_size, sizeof(unsigned long)));
}

static int xr_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct xprobe *x = container_of(get_kretprobe(ri), struct xprobe, rp);
	unsigned long flags;
	int ret = 0;

	local_irq_save(flags);
	if (x->entry)
		ret = x->entry(ri, regs);
	if (!ret) {
		*irq_word(ri, x) = regs->flags & X86_EFLAGS_IF;
		regs->flags &= ~X86_EFLAGS_IF;
	}
	local_irq_restore(flags);
	return ret;
}

static int xr_exit(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct xprobe *x = container_of(get_kretprobe(ri), struct xprobe, rp);
	unsigned long flags;
	int ret = 0;

	local_irq_save(flags);
	if (regs->flags & X86_EFLAGS_IF)
		atomic_long_inc(&x->irqs_on_at_return);
	if (x->exit)
		ret = x->exit(ri, regs);
	regs->flags |= *irq_word(ri, x);
	local_irq_restore(flags);
	return ret;
}

/* Is addr right after a function's 5-byte fentry site (call or nop5)? */
static bool after_fentry(kprobe_opcode_t *addr)
{
	static const u8 nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	u8 code[5];

	if (!addr || copy_from_kernel_nofault(code, (u8 *)addr - MCOUNT_INSN_SIZE, sizeof(code)))
		return false;
	return code[0] == 0xe8 || !memcmp(code, nop5, sizeof(nop5));
}

static unsigned long probe_missed(struct xprobe *x)
{
	if (!x->registered)
		return 0;
	return x->ret ? (unsigned long)x->rp.nmissed + x->rp.kp.nmissed : x->kp.nmissed;
}

static int probe_register(struct xprobe *x, bool quiet)
{
	/* A kprobe struct must be zeroed before every registration. */
	if (x->ret) {
		memset(&x->rp, 0, sizeof(x->rp));
		x->rp.kp.symbol_name = x->sym;
		x->rp.entry_handler = xr_entry;
		x->rp.handler = xr_exit;
		x->rp.data_size = ALIGN(x->data_size, sizeof(unsigned long)) + sizeof(unsigned long);
		/* gnttab_end_foreign_access may sleep (kmalloc) inside: room for many tasks */
		x->rp.maxactive = 128;
		x->err = register_kretprobe(&x->rp);
	} else {
		memset(&x->kp, 0, sizeof(x->kp));
		x->kp.symbol_name = x->sym;
		x->kp.offset = x->offset ? *x->offset : MCOUNT_INSN_SIZE;
		x->kp.pre_handler = xr_pre;
		x->err = register_kprobe(&x->kp);
		/*
		 * A probe on a function's entry is an ftrace probe here
		 * (KPROBES_ON_FTRACE), run with interrupts on while the kernel
		 * counts a probe as running: an interrupt landing there would
		 * lose all its own probe hits.  Past the 5-byte fentry call
		 * the arguments are still in their registers and int3 keeps
		 * interrupts off.  A function without an fentry site gets its
		 * probe at the entry after all.
		 */
		if (!x->offset && (x->err || !after_fentry(x->kp.addr))) {
			if (!x->err)
				unregister_kprobe(&x->kp);
			memset(&x->kp, 0, sizeof(x->kp));
			x->kp.symbol_name = x->sym;
			x->kp.pre_handler = xr_pre;
			x->err = register_kprobe(&x->kp);
		}
	}
	x->registered = !x->err;
	x->missed_reported = 0;
	if (x->err && !quiet)
		pr_warn("cannot probe %s: error %d\n", x->sym, x->err);
	return x->err;
}

static void probe_unregister(struct xprobe *x)
{
	if (!x->registered)
		return;
	if (x->ret)
		unregister_kretprobe(&x->rp);
	else
		unregister_kprobe(&x->kp);
	x->registered = false;
}

static void group_unregister(enum group g)
{
	int i, cpu;

	for (i = ARRAY_SIZE(probes) - 1; i >= 0; i--)
		if (probes[i].group == g)
			probe_unregister(&probes[i]);
	/* An interrupt whose return was not seen must not tag later calls. */
	if (g == G_BLKFRONT)
		for_each_possible_cpu(cpu)
			per_cpu_ptr(&cpu_batch, cpu)->c = 0;
}

/* Under probe_mutex. */
static void blkfront_register(bool at_load)
{
	unsigned long flags;
	int i;

	if (!blkfront_layout_given())
		return;
	spin_lock_irqsave(&rings_lock, flags);
	nr_rings = 0;
	spin_unlock_irqrestore(&rings_lock, flags);
	for (i = 0; i < ARRAY_SIZE(probes); i++) {
		struct xprobe *x = &probes[i];

		if (x->group != G_BLKFRONT || x->registered)
			continue;
		if (x->offset && *x->offset < 0)	/* an unused unlock site */
			continue;
		x->wanted = true;
		if (probe_register(x, at_load) && at_load) {
			/* Not loaded yet: the module notifier will try again. */
			group_unregister(G_BLKFRONT);
			for (i = 0; i < ARRAY_SIZE(probes); i++)
				if (probes[i].group == G_BLKFRONT)
					probes[i].err = 0;
			blkfront_state = "waiting for xen_blkfront";
			return;
		}
	}
	blkfront_state = "registered";
	for (i = 0; i < ARRAY_SIZE(probes); i++)
		if (probes[i].group == G_BLKFRONT && probes[i].err)
			blkfront_state = "FAILED (see probes)";
}

static int module_event(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;
	unsigned long flags;

	if (strcmp(mod->name, "xen_blkfront"))
		return NOTIFY_DONE;
	mutex_lock(&probe_mutex);
	if (action == MODULE_STATE_COMING) {
		blkfront_register(false);
	} else if (action == MODULE_STATE_GOING) {
		group_unregister(G_BLKFRONT);
		spin_lock_irqsave(&rings_lock, flags);
		nr_rings = 0;
		spin_unlock_irqrestore(&rings_lock, flags);
		if (blkfront_layout_given())
			blkfront_state = "waiting for xen_blkfront (unloaded)";
	}
	mutex_unlock(&probe_mutex);
	return NOTIFY_DONE;
}

static struct notifier_block module_nb = {
	.notifier_call = module_event,
};

/* Probes whose misses were not reported yet become _missed lines. */
static void report_missed(void)
{
	int i;

	mutex_lock(&probe_mutex);
	for (i = 0; i < ARRAY_SIZE(probes); i++) {
		struct xprobe *x = &probes[i];
		unsigned long m = probe_missed(x);

		if (m > x->missed_reported) {
			lost(x->sym, m - x->missed_reported);
			x->missed_reported = m;
		}
	}
	for (i = 0; i < nr_lock_sites; i++) {
		struct lock_site *ls = &lock_sites[i];

		if (ls->kp.nmissed > ls->missed_reported) {
			lost("gnttab_list_lock-unlock", ls->kp.nmissed - ls->missed_reported);
			ls->missed_reported = ls->kp.nmissed;
		}
	}
	mutex_unlock(&probe_mutex);
}

static void emit_config(void)
{
	u64 buf[sizeof(struct xr_head) / 8 + 2 + 16];
	struct rec r;

	rec_init(&r, buf, sizeof(buf), XK_CONFIG, ktime_get_ns());
	r.h->c = atomic64_inc_return(&call_seq);
	rw(&r, TRACE_FORMAT_VERSION);
	rw(&r, sym_free_callback_list != 0);
	rec_str(&r, blkfront_state);
	rec_seal(&r);
}

/* ---------------------------------------------------------------- debugfs */

static struct dentry *dbg_dir;

/*
 * Whole records of CPU `cpu`'s buffer, at most `room` bytes, into `bounce`:
 * how many bytes (0: none there; -EINVAL: its first record alone is
 * larger than `room`).  Consumed only once they reached the reader.
 *
 * A blkif_interrupt still running on that CPU has written the grant ends
 * of its completions but not yet its responses (they are read at its
 * unlock): its records, and what follows them, wait for the next read, so
 * that the harness gets each interrupt whole and can put every response
 * before the ends of its request's grants.  The interrupt sets its batch
 * before it commits a record under this lock, so reading the batch under
 * the lock sees every batch that has a record here.
 */
static s64 take_cpu(struct cpu_buf *b, int cpu, u64 room)
{
	unsigned long flags;
	u64 avail, n = 0, at, first, open;
	bool held = false;
	struct xr_head *h;

	spin_lock_irqsave(&b->lock, flags);
	open = READ_ONCE(per_cpu_ptr(&cpu_batch, cpu)->c);
	avail = b->head - b->tail;
	while (n < avail) {
		/* Records are 8-byte aligned in a buffer of whole pages: a header never wraps. */
		h = (struct xr_head *)(b->buf + (b->tail + n) % tb_size);
		if (open && h->batch == open) {
			held = true;
			break;
		}
		if (h->len < sizeof(struct xr_head) || n + h->len > room)
			break;
		n += h->len;
	}
	at = b->tail % tb_size;
	first = min(n, tb_size - at);
	memcpy(bounce, b->buf + at, first);
	if (first < n)
		memcpy(bounce + first, b->buf, n - first);
	spin_unlock_irqrestore(&b->lock, flags);
	return (!n && avail && !held) ? -EINVAL : (s64)n;
}

/* Every CPU's records, a CPU's after another's: the harness orders them by `c`. */
static ssize_t trace_read(struct file *f, char __user *ubuf, size_t count, loff_t *ppos)
{
	unsigned long flags;
	size_t done = 0;
	ssize_t err = 0;
	s64 n;
	int cpu;

	if (!count)
		return 0;
	report_missed();
	mutex_lock(&read_mutex);
	for_each_possible_cpu(cpu) {
		struct cpu_buf *b = &bufs[cpu];

		n = take_cpu(b, cpu, min_t(u64, count - done, BOUNCE_BYTES));
		if (n < 0) {
			/* The reader's buffer is full, or too small for one record. */
			if (!done)
				err = n;
			break;
		}
		if (!n)
			continue;
		if (copy_to_user(ubuf + done, bounce, n)) {
			err = -EFAULT;
			break;
		}
		spin_lock_irqsave(&b->lock, flags);
		b->tail += n;
		spin_unlock_irqrestore(&b->lock, flags);
		done += n;
	}
	mutex_unlock(&read_mutex);
	return done ? done : err;
}

static const struct file_operations trace_fops = {
	.owner = THIS_MODULE,
	.read = trace_read,
	.llseek = noop_llseek,
};

static int stats_show(struct seq_file *m, void *v)
{
	unsigned long flags;
	u64 events = 0, dropped = 0, head = 0, tail = 0, cpus = 0;
	int i, cpu;

	for_each_possible_cpu(cpu) {
		struct cpu_buf *b = &bufs[cpu];

		spin_lock_irqsave(&b->lock, flags);
		events += b->records;
		dropped += b->dropped;
		head += b->head;
		tail += b->tail;
		spin_unlock_irqrestore(&b->lock, flags);
		cpus++;
	}

	seq_printf(m, "version: %d\n", TRACE_FORMAT_VERSION);
	seq_printf(m, "tracing: %s\n", READ_ONCE(tracing) ? "on" : "off");
	seq_printf(m, "events: %llu\n", events);
	seq_printf(m, "bytes: %llu\n", head);
	seq_printf(m, "unread_bytes: %llu\n", head - tail);
	seq_printf(m, "buffer_bytes: %llu\n", tb_size * cpus);
	seq_printf(m, "dropped: %llu\n", dropped);
	seq_printf(m, "lost: %lld\n", (long long)atomic64_read(&anomalies));
	seq_printf(m, "end_calls: %lld\n", (long long)atomic64_read(&end_calls));
	seq_printf(m, "end_events: %lld\n", (long long)atomic64_read(&end_events));
	seq_printf(m, "cb_fire: %s\n", sym_free_callback_list ? "on" : "off (sym_free_callback_list=0)");
	seq_printf(m, "lock_sites: %d registered, %d refused, %ld hits%s\n", nr_lock_sites,
		   lock_sites_refused, atomic_long_read(&lock_hits),
		   sym_gnttab_list_lock ? "" : " (off: sym_gnttab_list_lock=0)");
	mutex_lock(&probe_mutex);
	seq_printf(m, "blkfront: %s\n", blkfront_state);
	seq_puts(m, "failures:");
	for (i = 0; i < ARRAY_SIZE(probes); i++)
		if (probes[i].wanted && probes[i].err)
			seq_printf(m, " %s(%d)", probes[i].sym, probes[i].err);
	seq_puts(m, "\n");
	for (i = 0; i < ARRAY_SIZE(probes); i++) {
		struct xprobe *x = &probes[i];

		seq_printf(m, "probe %s%s: %s hits=%ld missed=%lu irqs_on_at_return=%ld\n", x->sym,
			   x->offset ? x->site : "", x->registered ? "registered" : x->err ? "FAILED" : "off",
			   atomic_long_read(&x->hits), probe_missed(x), atomic_long_read(&x->irqs_on_at_return));
	}
	mutex_unlock(&probe_mutex);
	spin_lock_irqsave(&rings_lock, flags);
	for (i = 0; i < nr_rings; i++)
		seq_printf(m, "ring gref:%u irq=%u req_prod_traced=%u notifies=%d rinfo=%px\n",
			   rings[i].ref0, rings[i].irq, rings[i].emitted,
			   atomic_read(&rings[i].notifies), rings[i].rinfo);
	spin_unlock_irqrestore(&rings_lock, flags);
	for_each_possible_cpu(cpu)
		seq_printf(m, "cpu %d records=%llu bytes=%llu dropped=%llu\n", cpu,
			   READ_ONCE(bufs[cpu].records), READ_ONCE(bufs[cpu].head),
			   READ_ONCE(bufs[cpu].dropped));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(stats);

static ssize_t ctl_write(struct file *f, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char cmd[16];
	unsigned long flags;
	int cpu;
	char *s;

	if (count >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, ubuf, count))
		return -EFAULT;
	cmd[count] = '\0';
	s = strim(cmd);
	if (!strcmp(s, "start")) {
		report_missed();
		WRITE_ONCE(tracing, true);
		emit_config();
	} else if (!strcmp(s, "stop")) {
		WRITE_ONCE(tracing, false);
		report_missed();
	} else if (!strcmp(s, "clear")) {
		report_missed();	/* so that misses before the clear are not blamed on later */
		mutex_lock(&read_mutex);
		for_each_possible_cpu(cpu) {
			spin_lock_irqsave(&bufs[cpu].lock, flags);
			bufs[cpu].tail = bufs[cpu].head;
			bufs[cpu].drop_pending = 0;
			spin_unlock_irqrestore(&bufs[cpu].lock, flags);
		}
		mutex_unlock(&read_mutex);
	} else {
		return -EINVAL;
	}
	return count;
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.write = ctl_write,
	.llseek = noop_llseek,
};

/* ---------------------------------------------------------------- load */

static void free_buffers(void)
{
	int cpu;

	if (bufs)
		for_each_possible_cpu(cpu)
			vfree(bufs[cpu].buf);
	kfree(bufs);
	bufs = NULL;
	vfree(scratch);
	vfree(bounce);
	vfree(gref_frame);
}

/* An address given as a parameter must be the symbol it stands for (0: not given). */
static int check_symbol(const char *param, unsigned long addr, const char *want)
{
	char name[KSYM_NAME_LEN];

	if (!addr)
		return 0;
	sprint_symbol_no_offset(name, addr);
	if (strcmp(name, want)) {
		pr_err("%s=%#lx is %s, not %s\n", param, addr, name, want);
		return -EINVAL;
	}
	return 0;
}

static int check_addresses(void)
{
	if (sym_gnttab_list_lock && !sym_unlock_irqrestore) {
		pr_err("sym_gnttab_list_lock needs sym_unlock_irqrestore\n");
		return -EINVAL;
	}
	return check_symbol("sym_free_callback_list", sym_free_callback_list, "gnttab_free_callback_list") ?:
	       check_symbol("sym_gnttab_list_lock", sym_gnttab_list_lock, "gnttab_list_lock") ?:
	       check_symbol("sym_unlock_irqrestore", sym_unlock_irqrestore, "_raw_spin_unlock_irqrestore");
}

static int __init xenrig_trace_init(void)
{
	bool nomem = false;
	int i, err, cpu;

	BUILD_BUG_ON(sizeof(struct xr_head) != 56);	/* harness/capture/guest_records.py */
	if (!xen_domain() || !xen_feature(XENFEAT_auto_translated_physmap)) {
		pr_err("needs an HVM/PVH Xen guest (guest frames are read as our own pfns)\n");
		return -ENODEV;
	}
	err = check_addresses();
	if (err)
		return err;
	if (buf_mb < 1 || buf_mb > 1024)
		return -EINVAL;

	tb_size = (u64)buf_mb << 20;
	gref_max = gnttab_max_grant_frames() * (XEN_PAGE_SIZE / sizeof(struct grant_entry_v1));
	bufs = kcalloc(nr_cpu_ids, sizeof(*bufs), GFP_KERNEL);
	if (bufs)
		for_each_possible_cpu(cpu) {
			spin_lock_init(&bufs[cpu].lock);
			bufs[cpu].buf = vmalloc(tb_size);
			nomem |= !bufs[cpu].buf;
		}
	scratch = vmalloc((size_t)nr_cpu_ids * SCRATCH_BYTES);
	bounce = vmalloc(BOUNCE_BYTES);
	gref_frame = vzalloc(array_size(gref_max, sizeof(*gref_frame)));
	if (nomem || !bufs || !scratch || !bounce || !gref_frame) {
		free_buffers();
		return -ENOMEM;
	}

	for (i = 0; i < NR_RANGES; i++) {
		err = resolve_range(i);
		if (err && ranges[i].required) {
			pr_err("cannot find the extent of %s (error %d)\n", ranges[i].sym, err);
			free_buffers();
			return err;
		}
	}

	WRITE_ONCE(tracing, autostart);
	mutex_lock(&probe_mutex);
	for (i = 0; i < ARRAY_SIZE(probes); i++) {
		struct xprobe *x = &probes[i];

		if (x->group != G_CORE)
			continue;
		if (x->pre == on_notify && !blkfront_layout_given())
			continue;
		if (x->entry == in_cbs && !sym_free_callback_list)
			continue;
		x->wanted = true;
		if (probe_register(x, false) && x->required) {
			pr_err("refusing to load: cannot probe %s (error %d)\n", x->sym, x->err);
			err = x->err;
			group_unregister(G_CORE);
			mutex_unlock(&probe_mutex);
			free_buffers();
			return err;
		}
	}
	err = register_module_notifier(&module_nb);
	if (err) {
		group_unregister(G_CORE);
		mutex_unlock(&probe_mutex);
		free_buffers();
		return err;
	}
	blkfront_register(true);	/* if xen_blkfront is loaded already */
	if (sym_gnttab_list_lock)
		lock_sites_register();
	mutex_unlock(&probe_mutex);

	dbg_dir = debugfs_create_dir("xenrig_trace", NULL);
	debugfs_create_file("trace", 0400, dbg_dir, NULL, &trace_fops);
	debugfs_create_file("stats", 0444, dbg_dir, NULL, &stats_fops);
	debugfs_create_file("ctl", 0200, dbg_dir, NULL, &ctl_fops);

	if (autostart)
		emit_config();
	pr_info("loaded: %u MiB buffer per CPU, %u grant refs, blkfront %s, cb_fire %s\n",
		buf_mb, gref_max, blkfront_state, sym_free_callback_list ? "on" : "off");
	return 0;
}

static void __exit xenrig_trace_exit(void)
{
	debugfs_remove_recursive(dbg_dir);
	unregister_module_notifier(&module_nb);
	mutex_lock(&probe_mutex);
	lock_sites_unregister();
	group_unregister(G_BLKFRONT);
	group_unregister(G_CORE);
	mutex_unlock(&probe_mutex);
	free_buffers();
}

module_init(xenrig_trace_init);
module_exit(xenrig_trace_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION("1");
MODULE_DESCRIPTION("xenrig: trace grant-table calls and blkif rings of the guest's Xen frontends");
