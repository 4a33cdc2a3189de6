/*
 * xswrite PATH VALUE: write one xenstore node from inside a guest, through
 * the kernel's /dev/xen/xenbus (the guest image has no xenstore tools).
 * The hostile-guest test uses it to put shell metacharacters into every
 * node of its own xenstore directory that the harness reads in dom0.
 * Exit 0 when xenstored answered OK; its error text otherwise.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define XS_WRITE 11
#define XS_ERROR 16

struct xs_msg {
	uint32_t type, req_id, tx_id, len;
};

int main(int argc, char **argv)
{
	char buf[4096 + sizeof(struct xs_msg)];
	struct xs_msg *msg = (struct xs_msg *)buf;
	size_t plen, vlen;
	ssize_t got;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: xswrite PATH VALUE\n");
		return 2;
	}
	plen = strlen(argv[1]) + 1;
	vlen = strlen(argv[2]);
	if (plen + vlen > 4096) {
		fprintf(stderr, "xswrite: too long\n");
		return 2;
	}
	memset(msg, 0, sizeof(*msg));
	msg->type = XS_WRITE;
	msg->req_id = 1;
	msg->len = (uint32_t)(plen + vlen);
	memcpy(buf + sizeof(*msg), argv[1], plen);
	memcpy(buf + sizeof(*msg) + plen, argv[2], vlen);
	fd = open("/dev/xen/xenbus", O_RDWR);
	if (fd < 0) {
		perror("xswrite: /dev/xen/xenbus");
		return 1;
	}
	/* The device takes a message in one write. */
	if (write(fd, buf, sizeof(*msg) + msg->len) != (ssize_t)(sizeof(*msg) + msg->len)) {
		perror("xswrite: write");
		return 1;
	}
	got = read(fd, buf, sizeof(buf) - 1);
	if (got < (ssize_t)sizeof(*msg)) {
		perror("xswrite: read");
		return 1;
	}
	buf[got] = 0;
	if (msg->type == XS_ERROR) {
		fprintf(stderr, "xswrite: %s: %s\n", argv[1], buf + sizeof(*msg));
		return 1;
	}
	return 0;
}
