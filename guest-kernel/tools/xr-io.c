/*
 * xr-io: block I/O for xenrig workloads, with what busybox dd cannot do:
 * O_DIRECT at any size from 512 bytes (from a page-aligned buffer), several
 * requests in flight (Linux native AIO through raw syscalls: no libaio in the
 * guest), and a data check.
 *
 *   xr-io DEV MODE BS COUNT DEPTH [START_SECTOR]
 *     MODE  w: write a pattern   r: read and verify the pattern
 *           rw: write then read back and verify
 *     BS    bytes per request, a multiple of 512
 *     DEPTH requests in flight at once (1..64)
 *
 * The pattern of each 512-byte sector depends only on its sector number, so
 * a read verifies without remembering what was written.  Prints one line:
 *   xr-io mode=rw bs=4096 count=64 depth=8 bytes=524288 seconds=0.123 mib_s=4.1 errors=0 mismatches=0
 * and exits 0, or 1 on an I/O error or a mismatch, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long io_setup_(unsigned nr, aio_context_t *ctx) { return syscall(SYS_io_setup, nr, ctx); }
static long io_destroy_(aio_context_t ctx) { return syscall(SYS_io_destroy, ctx); }
static long io_submit_(aio_context_t ctx, long n, struct iocb **cbs) { return syscall(SYS_io_submit, ctx, n, cbs); }
static long io_getevents_(aio_context_t ctx, long min, long max, struct io_event *ev)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, NULL);
}

static void fill(uint8_t *buf, size_t len, uint64_t sector)
{
	for (size_t off = 0; off < len; off += 512, sector++)
		for (size_t i = 0; i < 512; i += 8) {
			uint64_t v = (sector << 16) ^ (i * 0x9E3779B97F4A7C15ull) ^ 0x58524947ull;
			memcpy(buf + off + i, &v, 8);
		}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct stats { unsigned long errors, mismatches, bytes; };

/* One pass over COUNT requests of BS bytes, DEPTH in flight. */
static int pass(int fd, int write, size_t bs, unsigned long count, unsigned depth, uint64_t start, struct stats *st)
{
	aio_context_t ctx = 0;
	struct iocb *cbs = calloc(depth, sizeof(*cbs));
	struct iocb **ptrs = calloc(depth, sizeof(*ptrs));
	uint8_t **bufs = calloc(depth, sizeof(*bufs));
	uint8_t *expect = aligned_alloc(4096, bs);
	struct io_event *ev = calloc(depth, sizeof(*ev));
	unsigned long next = 0, done = 0;
	unsigned inflight = 0;

	if (!cbs || !ptrs || !bufs || !expect || !ev || io_setup_(depth, &ctx) < 0) {
		perror("xr-io: setup");
		return -1;
	}
	for (unsigned i = 0; i < depth; i++) {
		if (posix_memalign((void **)&bufs[i], 4096, bs)) {
			perror("xr-io: buffer");
			return -1;
		}
	}
	while (done < count) {
		unsigned batch = 0;
		/* Fill every free slot, then submit them in one go: DEPTH requests
		 * really are in flight together on the ring. */
		for (unsigned slot = 0; slot < depth && next < count; slot++) {
			if (cbs[slot].aio_data)
				continue;
			uint64_t sector = start + next * (bs / 512);
			memset(&cbs[slot], 0, sizeof(cbs[slot]));
			cbs[slot].aio_fildes = fd;
			cbs[slot].aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
			cbs[slot].aio_buf = (uint64_t)(uintptr_t)bufs[slot];
			cbs[slot].aio_nbytes = bs;
			cbs[slot].aio_offset = (int64_t)sector * 512;
			cbs[slot].aio_data = next + 1;
			if (write)
				fill(bufs[slot], bs, sector);
			ptrs[batch++] = &cbs[slot];
			next++;
		}
		if (batch) {
			long r = io_submit_(ctx, batch, ptrs);
			if (r != (long)batch) {
				fprintf(stderr, "xr-io: io_submit: %s\n", r < 0 ? strerror(errno) : "short");
				return -1;
			}
			inflight += batch;
		}
		long n = io_getevents_(ctx, 1, depth, ev);
		if (n < 0) {
			perror("xr-io: io_getevents");
			return -1;
		}
		for (long i = 0; i < n; i++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)ev[i].obj;
			uint64_t sector = cb->aio_offset / 512;
			if (ev[i].res != (int64_t)bs) {
				st->errors++;
			} else if (!write) {
				fill(expect, bs, sector);
				if (memcmp(expect, (void *)(uintptr_t)cb->aio_buf, bs))
					st->mismatches++;
			}
			st->bytes += bs;
			cb->aio_data = 0;
			inflight--;
			done++;
		}
	}
	io_destroy_(ctx);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: xr-io DEV w|r|rw BS COUNT DEPTH [START_SECTOR]\n");
		return 2;
	}
	const char *mode = argv[2];
	size_t bs = strtoul(argv[3], NULL, 0);
	unsigned long count = strtoul(argv[4], NULL, 0);
	unsigned depth = strtoul(argv[5], NULL, 0);
	uint64_t start = argc > 6 ? strtoull(argv[6], NULL, 0) : 0;
	int do_w = strchr(mode, 'w') != NULL, do_r = strchr(mode, 'r') != NULL;

	if (!bs || bs % 512 || bs > (1 << 22) || !count || !depth || depth > 64 || (!do_w && !do_r)) {
		fprintf(stderr, "xr-io: bad arguments\n");
		return 2;
	}
	int fd = open(argv[1], O_RDWR | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "xr-io: open %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	struct stats st = {0};
	double t0 = now();
	if ((do_w && pass(fd, 1, bs, count, depth, start, &st)) || (do_r && pass(fd, 0, bs, count, depth, start, &st)))
		return 1;
	double secs = now() - t0;
	printf("xr-io mode=%s bs=%zu count=%lu depth=%u bytes=%lu seconds=%.3f mib_s=%.2f errors=%lu mismatches=%lu\n",
	       mode, bs, count, depth, st.bytes, secs, st.bytes / 1048576.0 / (secs > 0 ? secs : 1), st.errors, st.mismatches);
	close(fd);
	return st.errors || st.mismatches ? 1 : 0;
}
