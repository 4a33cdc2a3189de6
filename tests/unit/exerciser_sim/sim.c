/*
 * Host-side simulation for xenrig_gnttab.c: the grant-table allocator of
 * Linux 6.1 (free list, growth by whole frames up to the maximum, -ENOSPC,
 * free callbacks, deferred end of access), Xen's answers to the GNTTABOPs
 * the module issues, a dom0 that maps grants, xenstore and debugfs.
 *
 * Unlike the kernel, the simulated API checks who owns each ref: every call
 * the module makes on a ref it does not hold, or that would free a live
 * grant, prints "VIOLATION ..." and exits 3.  That is what the tests lean on
 * to show the module's ownership rules hold.
 *
 * stdin, one line each:
 *   load [LOG_KIB]      module init           unload     module exit
 *   c LINE              write LINE to ctl      cbytes HEX write raw bytes to ctl
 *   r                   read ctl               log        read log (small chunks)
 *   hold N              another driver takes N refs (claimed, never ours)
 *   map REF ro|rw       dom0 maps a grant      unmap REF
 *   poke REF OFF BYTE   dom0 writes through its map
 *   page REF            dom0 reads the granted page (hex)
 *   tick                the kernel's deferred-end timer runs once
 *   state               simulator state as JSON
 * stdout: one line per answer, prefixed W / R / LOG / PAGE / STATE / LOAD.
 */
#include "kstub.h"
#include <time.h>

int sim_module_init(void);
void sim_module_exit(void);
extern unsigned int *sim_param_log_kib;

#define LIST_END 0xffffffffU
#define RESERVED 8
#define PER_FRAME 512
#define SIM_DOMID 5
#define BAR1_START 0xf0000000ULL
#define BAR1_LEN 0x1000000ULL

static unsigned int max_frames = 4;
static unsigned int nr_frames = 1;	/* what the kernel has mapped */
static unsigned int xen_frames = 1;	/* Xen's size (setup_table can grow it alone) */
static unsigned int gt_version = 1;
static grant_ref_t *next_of;
static grant_ref_t free_head = LIST_END, last_free = LIST_END;
static unsigned int free_count;

enum ref_state { FREE, CHAIN, OUT, OTHER, RESV, DEFERRED };
static u8 *state;
static struct grant_entry_v1 *entry;
static struct gnttab_free_callback *cb_list;
int sim_irqs_disabled;
static long live_allocs, live_pages;
static unsigned long next_pfn = 0x10000;

struct deferred { grant_ref_t ref; struct page *page; struct deferred *next; };
static struct deferred *deferred;

#define MAX_PAGES 70000
static struct page *pages_by_idx[MAX_PAGES];

static void violation(const char *what, grant_ref_t ref)
{
	printf("VIOLATION %s ref=%u state=%d\n", what, ref, ref < max_frames * PER_FRAME ? state[ref] : -1);
	fflush(stdout);
	exit(3);
}

static void expect(grant_ref_t ref, enum ref_state want, const char *what)
{
	if (ref >= max_frames * PER_FRAME || state[ref] != want)
		violation(what, ref);
}

/* ---- memory, strings, files ---- */

void *sim_malloc(size_t n, bool zero)
{
	void *p = zero ? calloc(1, n ? n : 1) : malloc(n ? n : 1);

	if (p)
		live_allocs++;
	return p;
}

void sim_free(const void *p)
{
	if (p) {
		live_allocs--;
		free((void *)p);
	}
}

struct page *alloc_page(gfp_t gfp)
{
	struct page *pg = calloc(1, sizeof(*pg));

	(void)gfp;
	pg->addr = aligned_alloc(4096, 4096);
	memset(pg->addr, 0xee, 4096);
	pg->pfn = next_pfn++;
	pages_by_idx[pg->pfn - 0x10000] = pg;
	live_pages++;
	return pg;
}

void __free_page(struct page *pg)
{
	pages_by_idx[pg->pfn - 0x10000] = NULL;
	free(pg->addr);
	free(pg);
	live_pages--;
}

static struct page *page_of_gfn(unsigned long gfn)
{
	if (gfn < 0x10000 || gfn - 0x10000 >= MAX_PAGES)
		return NULL;
	return pages_by_idx[gfn - 0x10000];
}

u64 ktime_get_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (u64)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

int scnprintf(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0)
		return 0;
	return (size_t)n >= size ? (int)(size ? size - 1 : 0) : n;
}

/* The kernel's kstrtoull: base 0 means 0x hex, leading 0 octal; one trailing newline. */
int kstrtou64(const char *s, unsigned int base, u64 *res)
{
	char *end;
	unsigned long long v;

	if (!*s || *s == '-' || *s == '+' || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, base);
	if (*end == '\n')
		end++;
	if (end == s || *end)
		return -EINVAL;
	if (errno == ERANGE)
		return -ERANGE;
	*res = v;
	return 0;
}

ssize_t strscpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (n >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		return -E2BIG;
	}
	memcpy(dst, src, n + 1);
	return n;
}

char *bin2hex(char *dst, const void *src, size_t count)
{
	const u8 *p = src;

	while (count--)
		dst += sprintf(dst, "%02x", *p++);
	return dst;
}

u32 crc32_le(u32 crc, const void *p, size_t len)
{
	const u8 *b = p;
	int k;

	while (len--) {
		crc ^= *b++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320U & -(crc & 1));
	}
	return crc;
}

int simple_open(struct inode *inode, struct file *file)
{
	file->private_data = inode->i_private;
	return 0;
}

loff_t default_llseek(struct file *file, loff_t off, int whence)
{
	(void)file; (void)whence;
	return off;
}

ssize_t simple_read_from_buffer(void *to, size_t count, loff_t *ppos, const void *from, size_t available)
{
	loff_t pos = *ppos;

	if (pos < 0)
		return -EINVAL;
	if ((size_t)pos >= available || !count)
		return 0;
	if (count > available - pos)
		count = available - pos;
	memcpy(to, (const char *)from + pos, count);
	*ppos = pos + count;
	return count;
}

void *memdup_user_nul(const void *src, size_t len)
{
	char *p = sim_malloc(len + 1, false);

	memcpy(p, src, len);
	p[len] = '\0';
	return p;
}

static struct { const char *name; const struct file_operations *fops; } files[4];
static int nfiles;
static struct dentry the_dir;

struct dentry *debugfs_create_dir(const char *name, struct dentry *parent)
{
	(void)name; (void)parent;
	return &the_dir;
}

struct dentry *debugfs_create_file(const char *name, unsigned short mode, struct dentry *parent,
				   void *data, const struct file_operations *fops)
{
	(void)mode; (void)parent; (void)data;
	files[nfiles].name = name;
	files[nfiles++].fops = fops;
	return &the_dir;
}

void debugfs_remove_recursive(struct dentry *d)
{
	(void)d;
	nfiles = 0;
}

static const struct file_operations *fops_of(const char *name)
{
	int i;

	for (i = 0; i < nfiles; i++)
		if (!strcmp(files[i].name, name))
			return files[i].fops;
	return NULL;
}

static struct pci_dev platform_dev = {
	.dev = { .driver = &platform_dev },
	.bar_start = { 0xc000, BAR1_START }, .bar_len = { 0x100, BAR1_LEN },
};

struct pci_dev *pci_get_device(unsigned int vendor, unsigned int device, struct pci_dev *from)
{
	(void)from;
	return vendor == 0x5853 && device == 0x0001 ? &platform_dev : NULL;
}

void pci_dev_put(struct pci_dev *dev)
{
	(void)dev;
}

/* ---- xenstore ---- */

static struct { char path[96]; char value[32]; } xs[128];

int xenbus_printf(struct xenbus_transaction t, const char *dir, const char *node, const char *fmt, ...)
{
	char path[96];
	va_list ap;
	int i, fr = -1;

	(void)t;
	snprintf(path, sizeof(path), "%s/%s", dir, node);
	for (i = 0; i < 128; i++) {
		if (xs[i].path[0] && !strcmp(xs[i].path, path))
			break;
		if (!xs[i].path[0] && fr < 0)
			fr = i;
	}
	if (i == 128)
		i = fr;
	if (i < 0)
		return -ENOSPC;
	strcpy(xs[i].path, path);
	va_start(ap, fmt);
	vsnprintf(xs[i].value, sizeof(xs[i].value), fmt, ap);
	va_end(ap);
	return 0;
}

int xenbus_rm(struct xenbus_transaction t, const char *dir, const char *node)
{
	char path[96];
	int i;

	(void)t;
	snprintf(path, sizeof(path), "%s/%s", dir, node);
	for (i = 0; i < 128; i++)
		if (!strcmp(xs[i].path, path)) {
			xs[i].path[0] = '\0';
			return 0;
		}
	return -ENOENT;
}

/* ---- Linux 6.1 grant allocator ---- */

static void run_callbacks(void)
{
	struct gnttab_free_callback *cb = cb_list, *next;

	cb_list = NULL;
	sim_irqs_disabled = 1;	/* the kernel holds gnttab_list_lock, irqs off */
	for (; cb; cb = next) {
		next = cb->next;
		if (free_count >= cb->count) {
			cb->next = NULL;
			cb->fn(cb->arg);
		} else {
			cb->next = cb_list;
			cb_list = cb;
		}
	}
	sim_irqs_disabled = 0;
}

static void put_free(grant_ref_t ref)
{
	if (ref < RESERVED)
		return;
	if (entry[ref].flags)
		violation("freed a live grant", ref);
	state[ref] = FREE;
	next_of[ref] = free_head;
	if (!free_count)
		last_free = ref;
	free_head = ref;
	free_count++;
}

static void append_free(unsigned int start, unsigned int n)
{
	unsigned int i;

	for (i = start; i < start + n; i++) {
		next_of[i] = i + 1 < start + n ? i + 1 : LIST_END;
		state[i] = FREE;
	}
	if (!free_count)
		free_head = start;
	else
		next_of[last_free] = start;
	last_free = start + n - 1;
	free_count += n;
}

static int get_free_entries(unsigned int count, enum ref_state as)
{
	grant_ref_t head, ref;
	unsigned int i;

	if (free_count < count) {
		unsigned int extra = (count - free_count + PER_FRAME - 1) / PER_FRAME;

		if (nr_frames + extra > max_frames)
			return -ENOSPC;
		append_free(nr_frames * PER_FRAME, extra * PER_FRAME);
		nr_frames += extra;
		if (xen_frames < nr_frames)
			xen_frames = nr_frames;
		run_callbacks();
	}
	head = ref = free_head;
	for (i = 0; i < count; i++) {
		state[ref] = as;
		if (i + 1 < count)
			ref = next_of[ref];
	}
	free_head = next_of[ref];
	next_of[ref] = LIST_END;
	free_count -= count;
	if (!free_count)
		last_free = LIST_END;
	return head;
}

unsigned int gnttab_max_grant_frames(void)
{
	return max_frames;
}

int gnttab_alloc_grant_references(u16 count, grant_ref_t *head)
{
	int h;

	if (!count)
		violation("alloc of 0 refs (corrupts the 6.1 free count)", 0);
	h = get_free_entries(count, CHAIN);
	if (h < 0)
		return -ENOSPC;
	*head = h;
	return 0;
}

int gnttab_claim_grant_reference(grant_ref_t *head)
{
	grant_ref_t g = *head;

	if (g == LIST_END)
		return -ENOSPC;
	expect(g, CHAIN, "claim from a chain whose head is not a chain member");
	*head = next_of[g];
	state[g] = OUT;
	return g;
}

void gnttab_release_grant_reference(grant_ref_t *head, grant_ref_t release)
{
	expect(release, OUT, "release of a ref not held");
	if (entry[release].flags)
		violation("released a live grant into a chain", release);
	next_of[release] = *head;
	*head = release;
	state[release] = CHAIN;
}

void gnttab_free_grant_references(grant_ref_t head)
{
	while (head != LIST_END) {
		grant_ref_t next = next_of[head];

		expect(head, CHAIN, "free_grant_references on a non-chain");
		put_free(head);
		head = next;
	}
	run_callbacks();
}

void gnttab_free_grant_reference(grant_ref_t ref)
{
	expect(ref, OUT, "free of a ref not held");
	put_free(ref);
	run_callbacks();
}

void gnttab_grant_foreign_access_ref(grant_ref_t ref, domid_t domid, unsigned long frame, int readonly)
{
	expect(ref, OUT, "grant on a ref not held");
	if (entry[ref].flags & (GTF_reading | GTF_writing))
		violation("re-granted an entry that is mapped", ref);
	entry[ref].domid = domid;
	entry[ref].frame = frame;
	entry[ref].flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

int gnttab_grant_foreign_access(domid_t domid, unsigned long frame, int readonly)
{
	int ref = get_free_entries(1, OUT);

	if (ref < 0)
		return -ENOSPC;
	gnttab_grant_foreign_access_ref(ref, domid, frame, readonly);
	return ref;
}

static int end_ref(grant_ref_t ref)
{
	if (entry[ref].flags & (GTF_reading | GTF_writing))
		return 0;
	entry[ref].flags = 0;
	return 1;
}

int gnttab_end_foreign_access_ref(grant_ref_t ref)
{
	expect(ref, OUT, "end of access on a ref not held");
	return end_ref(ref);
}

int gnttab_try_end_foreign_access(grant_ref_t ref)
{
	int ret;

	expect(ref, OUT, "try_end on a ref not held");
	ret = end_ref(ref);
	if (ret) {
		put_free(ref);
		run_callbacks();
	}
	return ret;
}

void gnttab_end_foreign_access(grant_ref_t ref, struct page *page)
{
	struct deferred *d;

	if (gnttab_try_end_foreign_access(ref)) {
		if (page)
			__free_page(page);
		return;
	}
	if (!page)
		violation("end_foreign_access(ref, NULL) on a busy entry", ref);
	d = calloc(1, sizeof(*d));
	d->ref = ref;
	d->page = page;
	d->next = deferred;
	deferred = d;
	state[ref] = DEFERRED;
}

void gnttab_request_free_callback(struct gnttab_free_callback *cb, void (*fn)(void *), void *arg, u16 count)
{
	struct gnttab_free_callback *c;

	for (c = cb_list; c; c = c->next)
		if (c == cb)
			return;
	cb->fn = fn;
	cb->arg = arg;
	cb->count = count;
	cb->next = cb_list;
	cb_list = cb;
	run_callbacks();
}

void gnttab_cancel_free_callback(struct gnttab_free_callback *cb)
{
	struct gnttab_free_callback **p;

	for (p = &cb_list; *p; p = &(*p)->next)
		if (*p == cb) {
			*p = cb->next;
			break;
		}
}

static void tick(void)
{
	struct deferred **p = &deferred;

	while (*p) {
		struct deferred *d = *p;

		if (end_ref(d->ref)) {
			state[d->ref] = OUT;
			put_free(d->ref);
			__free_page(d->page);
			*p = d->next;
			free(d);
		} else {
			p = &d->next;
		}
	}
	run_callbacks();
}

/* ---- Xen ---- */

int HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{
	if (count != 1)
		return -EINVAL;
	switch (cmd) {
	case GNTTABOP_query_size: {
		struct gnttab_query_size *q = uop;

		if (q->dom == DOMID_SELF || q->dom == SIM_DOMID) {
			q->nr_frames = xen_frames;
			q->max_nr_frames = max_frames;
			q->status = GNTST_okay;
		} else {
			q->status = q->dom == 0 ? GNTST_permission_denied : GNTST_bad_domain;
		}
		return 0;
	}
	case GNTTABOP_setup_table: {
		struct gnttab_setup_table *s = uop;
		unsigned int i;

		if (s->dom != DOMID_SELF && s->dom != SIM_DOMID) {
			s->status = s->dom == 0 ? GNTST_permission_denied : GNTST_bad_domain;
			return 0;
		}
		if (s->nr_frames > max_frames) {
			s->status = GNTST_general_error;
			return 0;
		}
		if (s->nr_frames > xen_frames)
			xen_frames = s->nr_frames;
		for (i = 0; i < s->nr_frames; i++)
			s->frame_list.p[i] = i < nr_frames ? (BAR1_START >> 12) + i : ~0UL;
		s->status = GNTST_okay;
		return 0;
	}
	case GNTTABOP_get_version: {
		struct gnttab_get_version *g = uop;

		if (g->dom != DOMID_SELF && g->dom != SIM_DOMID)
			return -ESRCH;
		g->version = gt_version;
		return 0;
	}
	case GNTTABOP_set_version: {
		struct gnttab_set_version *v = uop;
		int rc = 0;
		unsigned int i;

		if (v->version != 1 && v->version != 2)
			rc = -EINVAL;
		else if (v->version != gt_version) {
			for (i = RESERVED; i < nr_frames * PER_FRAME; i++)
				if (entry[i].flags & (GTF_reading | GTF_writing))
					rc = -EBUSY;
			if (!rc)
				gt_version = v->version;
		}
		v->version = gt_version;
		return rc;
	}
	}
	return -ENOSYS;
}

/* ---- driver ---- */

static void print_state(const char *tag)
{
	unsigned int i, counts[6] = { 0 }, granted = 0, ndef = 0, nxs = 0, ncb = 0;
	struct gnttab_free_callback *c;
	struct deferred *d;

	for (i = 0; i < max_frames * PER_FRAME; i++) {
		counts[state[i]]++;
		granted += !!entry[i].flags && i >= RESERVED;
	}
	for (d = deferred; d; d = d->next)
		ndef++;
	for (i = 0; i < 128; i++)
		nxs += !!xs[i].path[0];
	for (c = cb_list; c; c = c->next)
		ncb++;
	printf("%s {\"free_count\":%u,\"nr_frames\":%u,\"xen_frames\":%u,\"state_free\":%u,\"state_chain\":%u,"
	       "\"state_out\":%u,\"state_other\":%u,\"state_deferred\":%u,\"granted\":%u,\"deferred\":%u,"
	       "\"live_pages\":%ld,\"live_allocs\":%ld,\"xs_keys\":%u,\"callbacks_listed\":%u,\"version\":%u",
	       tag, free_count, nr_frames, xen_frames, counts[FREE], counts[CHAIN], counts[OUT], counts[OTHER],
	       counts[DEFERRED], granted, ndef, live_pages, live_allocs, nxs, ncb, gt_version);
	for (i = 0; i < 128; i++)
		if (xs[i].path[0])
			printf(",\"xs:%s\":\"%s\"", xs[i].path, xs[i].value);
	printf("}\n");
}

static void do_write(const char *buf, size_t len)
{
	const struct file_operations *f = fops_of("ctl");
	struct file file = { 0 };
	struct inode inode = { 0 };
	loff_t pos = 0;

	if (!f) {
		printf("W nofile\n");
		return;
	}
	f->open(&inode, &file);
	printf("W %zd\n", f->write(&file, buf, len, &pos));
}

static void do_read(const char *name, const char *tag, size_t chunk)
{
	const struct file_operations *f = fops_of(name);
	struct file file = { 0 };
	struct inode inode = { 0 };
	static char out[64 << 20];
	size_t len = 0;
	loff_t pos = 0;
	ssize_t n;

	if (!f) {
		printf("%s nofile\n", tag);
		return;
	}
	if (f->open(&inode, &file)) {
		printf("%s open-failed\n", tag);
		return;
	}
	while ((n = f->read(&file, out + len, chunk, &pos)) > 0)
		len += n;
	if (f->release)
		f->release(&inode, &file);
	printf("%s-BEGIN %zu\n", tag, len);
	fwrite(out, 1, len, stdout);
	printf("%s-END\n", tag);
}

int main(int argc, char **argv)
{
	char line[4096];
	unsigned int total;

	if (argc > 1)
		max_frames = atoi(argv[1]);
	total = max_frames * PER_FRAME;
	next_of = calloc(total, sizeof(*next_of));
	state = calloc(total, 1);
	entry = calloc(total, sizeof(*entry));
	memset(state, RESV, RESERVED);
	entry[0].flags = entry[1].flags = GTF_permit_access;	/* console, xenstore */
	append_free(RESERVED, PER_FRAME - RESERVED);

	while (fgets(line, sizeof(line), stdin)) {
		char *arg = strchr(line, ' ');
		unsigned int a, b, c;
		char acc[8];

		line[strcspn(line, "\n")] = '\0';
		if (arg)
			*arg++ = '\0';
		if (!strcmp(line, "load")) {
			if (arg)
				*sim_param_log_kib = atoi(arg);
			printf("LOAD %d\n", sim_module_init());
		} else if (!strcmp(line, "unload")) {
			sim_module_exit();
			printf("UNLOADED\n");
		} else if (!strcmp(line, "c")) {
			char buf[4200];

			snprintf(buf, sizeof(buf), "%s\n", arg ? arg : "");
			do_write(buf, strlen(buf));
		} else if (!strcmp(line, "cbytes")) {
			char buf[4200];
			size_t n = 0;

			while (arg && arg[2 * n] && sscanf(arg + 2 * n, "%2x", &a) == 1)
				buf[n++] = a;
			do_write(buf, n);
		} else if (!strcmp(line, "r")) {
			do_read("ctl", "R", 4096);
		} else if (!strcmp(line, "log")) {
			do_read("log", "LOG", 13);
		} else if (!strcmp(line, "hold") && arg) {
			for (a = atoi(arg); a; a--)
				if (get_free_entries(1, OTHER) < 0)
					break;
			printf("HELD %u\n", a);
		} else if (!strcmp(line, "map") && arg && sscanf(arg, "%u %7s", &a, acc) == 2) {
			bool rw = !strcmp(acc, "rw");
			int st = 0;

			if (a >= total || !(entry[a].flags & GTF_permit_access) || entry[a].domid != 0)
				st = -8;
			else if (rw && (entry[a].flags & GTF_readonly))
				st = -8;
			else
				entry[a].flags |= GTF_reading | (rw ? GTF_writing : 0);
			printf("MAP %d\n", st);
		} else if (!strcmp(line, "unmap") && arg) {
			a = atoi(arg);
			entry[a].flags &= ~(GTF_reading | GTF_writing);
			printf("UNMAP 0\n");
		} else if (!strcmp(line, "poke") && arg && sscanf(arg, "%u %u %u", &a, &b, &c) == 3) {
			struct page *pg = page_of_gfn(entry[a].frame);
			int ok = pg && (entry[a].flags & GTF_writing);

			if (ok)
				((u8 *)pg->addr)[b] = c;
			printf("POKE %d\n", ok ? 0 : -1);
		} else if (!strcmp(line, "page") && arg) {
			struct page *pg;

			a = atoi(arg);
			pg = page_of_gfn(entry[a].frame);
			printf("PAGE ");
			for (b = 0; pg && b < 4096; b++)
				printf("%02x", ((u8 *)pg->addr)[b]);
			printf("\n");
		} else if (!strcmp(line, "tick")) {
			tick();
			printf("TICKED\n");
		} else if (!strcmp(line, "state")) {
			print_state("STATE");
		} else {
			printf("SIM-ERROR unknown %s\n", line);
		}
		fflush(stdout);
	}
	return 0;
}
