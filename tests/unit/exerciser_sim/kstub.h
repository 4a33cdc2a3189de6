/*
 * Just enough of the kernel's API for xenrig_gnttab.c to compile and run as
 * a host program: types, string helpers, locks that do nothing (the
 * simulation is single-threaded), memory from malloc, debugfs as a table of
 * file_operations.  The grant-table API, the hypercalls, PCI and xenbus are
 * declared here and simulated in sim.c.
 */
#ifndef XR_KSTUB_H
#define XR_KSTUB_H

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef unsigned long long u64;	/* as in the kernel, so %llu fits */
typedef int16_t s16;
typedef int32_t s32;
typedef long long s64;
typedef u32 grant_ref_t;
typedef u16 domid_t;
typedef unsigned long xen_pfn_t;
typedef unsigned int gfp_t;

#define U16_MAX 0xffffU
#define U32_MAX 0xffffffffU
#define U64_MAX 0xffffffffffffffffULL
#define PAGE_SIZE 4096UL
#define XEN_PAGE_SIZE 4096UL
#define XEN_PAGE_SHIFT 12
#define GFP_KERNEL 0u

#define __init
#define __exit
#define __user
#define __printf(a, b) __attribute__((format(printf, a, b)))
#define THIS_MODULE NULL
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define min(a, b) ((a) < (b) ? (a) : (b))
#define min_t(t, a, b) ((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b) ((t)(a) > (t)(b) ? (t)(a) : (t)(b))
#define array_size(a, b) ((size_t)(a) * (size_t)(b))

#define MODULE_LICENSE(x)
#define MODULE_VERSION(x)
#define MODULE_AUTHOR(x)
#define MODULE_DESCRIPTION(x)
#define MODULE_PARM_DESC(n, d)
/* The simulation sets parameters through sim_param_<name>. */
#define module_param(name, type, perm) unsigned int *sim_param_##name = &name
#define module_init(fn) int sim_module_init(void) { return fn(); }
#define module_exit(fn) void sim_module_exit(void) { fn(); }

#define pr_info(fmt, ...) fprintf(stderr, "KERN_INFO " pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warn(fmt, ...) fprintf(stderr, "KERN_WARN " pr_fmt(fmt), ##__VA_ARGS__)
#define pr_err(fmt, ...) fprintf(stderr, "KERN_ERR " pr_fmt(fmt), ##__VA_ARGS__)

#define MAX_ERRNO 4095
#define IS_ERR(p) ((unsigned long)(p) >= (unsigned long)-MAX_ERRNO)
#define PTR_ERR(p) ((long)(p))
#define ERR_PTR(e) ((void *)(long)(e))

/* locks: single-threaded simulation; irqs_disabled() reports the sim's state */
typedef struct { int unused; } spinlock_t;
struct mutex { int unused; };
struct rw_semaphore { int unused; };
#define DEFINE_MUTEX(n) struct mutex n
#define spin_lock_init(l) ((void)(l))
#define spin_lock_irqsave(l, f) ((void)(l), (f) = 0)
#define spin_unlock_irqrestore(l, f) ((void)(l), (void)(f))
#define init_rwsem(s) ((void)(s))
#define down_read(s) ((void)(s))
#define up_read(s) ((void)(s))
#define down_write(s) ((void)(s))
#define up_write(s) ((void)(s))
#define mutex_lock(m) ((void)(m))
#define mutex_unlock(m) ((void)(m))
#define mutex_lock_interruptible(m) ((void)(m), 0)
extern int sim_irqs_disabled;
#define irqs_disabled() (sim_irqs_disabled)
#define in_hardirq() 0
#define in_serving_softirq() 0
#define cond_resched() ((void)0)

typedef struct { int counter; } atomic_t;
typedef struct { long long counter; } atomic64_t;
#define atomic_set(a, v) ((a)->counter = (v))
#define atomic_read(a) ((a)->counter)
static inline int atomic_xchg(atomic_t *a, int v) { int o = a->counter; a->counter = v; return o; }
#define atomic64_read(a) ((a)->counter)
static inline long long atomic64_inc_return(atomic64_t *a) { return ++a->counter; }

u64 ktime_get_ns(void);

/* memory */
void *sim_malloc(size_t n, bool zero);
void sim_free(const void *p);
#define kzalloc(n, g) sim_malloc((n), true)
#define kcalloc(n, s, g) sim_malloc((size_t)(n) * (s), true)
#define vzalloc(n) sim_malloc((n), true)
#define vmalloc(n) sim_malloc((n), false)
#define kfree(p) sim_free(p)
#define vfree(p) sim_free(p)

struct page { void *addr; unsigned long pfn; };
struct page *alloc_page(gfp_t gfp);
void __free_page(struct page *page);
#define page_address(p) ((p)->addr)
#define xen_page_to_gfn(p) ((p)->pfn)

/* strings */
int scnprintf(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
int kstrtou64(const char *s, unsigned int base, u64 *res);
ssize_t strscpy(char *dst, const char *src, size_t size);
char *bin2hex(char *dst, const void *src, size_t count);
static inline void put_unaligned_le32(u32 v, void *p)
{
	u8 *b = p;

	b[0] = v; b[1] = v >> 8; b[2] = v >> 16; b[3] = v >> 24;
}
static inline void put_unaligned_le16(u16 v, void *p)
{
	u8 *b = p;

	b[0] = v; b[1] = v >> 8;
}
u32 crc32_le(u32 crc, const void *p, size_t len);

/* files */
struct inode { void *i_private; };
struct file { void *private_data; };
struct dentry { int unused; };
struct file_operations {
	void *owner;
	int (*open)(struct inode *, struct file *);
	ssize_t (*read)(struct file *, char *, size_t, loff_t *);
	ssize_t (*write)(struct file *, const char *, size_t, loff_t *);
	int (*release)(struct inode *, struct file *);
	loff_t (*llseek)(struct file *, loff_t, int);
};
int simple_open(struct inode *inode, struct file *file);
loff_t default_llseek(struct file *file, loff_t off, int whence);
ssize_t simple_read_from_buffer(void *to, size_t count, loff_t *ppos,
				const void *from, size_t available);
static inline unsigned long copy_to_user(void *to, const void *from, size_t n)
{
	memcpy(to, from, n);
	return 0;
}
void *memdup_user_nul(const void *src, size_t len);
struct dentry *debugfs_create_dir(const char *name, struct dentry *parent);
struct dentry *debugfs_create_file(const char *name, unsigned short mode,
				   struct dentry *parent, void *data,
				   const struct file_operations *fops);
void debugfs_remove_recursive(struct dentry *d);

/* PCI */
struct pci_dev { struct { void *driver; } dev; u64 bar_start[6]; u64 bar_len[6]; };
struct pci_dev *pci_get_device(unsigned int vendor, unsigned int device, struct pci_dev *from);
void pci_dev_put(struct pci_dev *dev);
#define pci_resource_start(d, b) ((d)->bar_start[b])
#define pci_resource_len(d, b) ((d)->bar_len[b])

/* Xen */
#define DOMID_SELF 0x7FF0U
#define xen_domain() 1
#define xen_hvm_domain() 1
#define xen_pvh_domain() 0
struct grant_entry_v1 { u16 flags; u16 domid; u32 frame; };
#define GTF_permit_access 1
#define GTF_readonly (1 << 2)
#define GTF_reading (1 << 3)
#define GTF_writing (1 << 4)
#define GNTTABOP_setup_table 2
#define GNTTABOP_query_size 6
#define GNTTABOP_set_version 8
#define GNTTABOP_get_version 10
#define GNTST_okay 0
#define GNTST_general_error (-1)
#define GNTST_bad_domain (-2)
#define GNTST_permission_denied (-8)
struct gnttab_query_size { domid_t dom; u32 nr_frames; u32 max_nr_frames; s16 status; };
struct gnttab_setup_table { domid_t dom; u32 nr_frames; s16 status; struct { xen_pfn_t *p; } frame_list; };
struct gnttab_get_version { domid_t dom; u16 pad; u32 version; };
struct gnttab_set_version { u32 version; };
#define set_xen_guest_handle(h, v) ((h).p = (v))
int HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count);

struct gnttab_free_callback {
	struct gnttab_free_callback *next;
	void (*fn)(void *);
	void *arg;
	u16 count;
};
unsigned int gnttab_max_grant_frames(void);
int gnttab_alloc_grant_references(u16 count, grant_ref_t *head);
int gnttab_claim_grant_reference(grant_ref_t *head);
void gnttab_release_grant_reference(grant_ref_t *head, grant_ref_t release);
void gnttab_free_grant_references(grant_ref_t head);
void gnttab_free_grant_reference(grant_ref_t ref);
void gnttab_grant_foreign_access_ref(grant_ref_t ref, domid_t domid, unsigned long frame, int readonly);
int gnttab_grant_foreign_access(domid_t domid, unsigned long frame, int readonly);
int gnttab_end_foreign_access_ref(grant_ref_t ref);
int gnttab_try_end_foreign_access(grant_ref_t ref);
void gnttab_end_foreign_access(grant_ref_t ref, struct page *page);
void gnttab_request_free_callback(struct gnttab_free_callback *cb, void (*fn)(void *), void *arg, u16 count);
void gnttab_cancel_free_callback(struct gnttab_free_callback *cb);

struct xenbus_transaction { u32 id; };
#define XBT_NIL ((struct xenbus_transaction){ 0 })
int xenbus_printf(struct xenbus_transaction t, const char *dir, const char *node, const char *fmt, ...) __printf(4, 5);
int xenbus_rm(struct xenbus_transaction t, const char *dir, const char *node);

#endif
