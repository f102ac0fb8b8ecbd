// SPDX-License-Identifier: GPL-2.0
/*
 * flipc DEV KEY_BASE64 SECONDS [CPU]: switch one peer between vanilla and inline as
 * fast as the kernel answers, for SECONDS, through WGH_CMD_SET_PEER of the "wghybrid"
 * genl family, each request acknowledged before the next. With CPU, the flipper runs
 * pinned there and also moves the peer's TX core between the CPUs every 16th switch.
 * A Python flipper manages ~10 switches a second under TCG; this one thousands, so
 * that the windows between one switch and the packets in flight (microseconds) are
 * hit. Prints "flips N errors E last_errno X"; exits 1 if any request failed.
 *
 * Built in the guest (the target tree has gcc) against the repository's uapi header.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wghybrid.h"

#define BUF 8192

struct req {
	struct nlmsghdr n;
	struct genlmsghdr g;
	char attrs[256];
};

static int fd;
static uint32_t seq;

static void put(struct req *r, uint16_t type, const void *data, uint16_t len)
{
	struct nlattr *a = (struct nlattr *)((char *)r + NLMSG_ALIGN(r->n.nlmsg_len));

	a->nla_type = type;
	a->nla_len = NLA_HDRLEN + len;
	memcpy((char *)a + NLA_HDRLEN, data, len);
	r->n.nlmsg_len = NLMSG_ALIGN(r->n.nlmsg_len) + NLA_ALIGN(a->nla_len);
}

static void start(struct req *r, uint16_t type, uint8_t cmd)
{
	memset(r, 0, sizeof(*r));
	r->n.nlmsg_len = NLMSG_LENGTH(GENL_HDRLEN);
	r->n.nlmsg_type = type;
	r->n.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	r->n.nlmsg_seq = ++seq;
	r->g.cmd = cmd;
	r->g.version = 1;
}

/* Send and read to the ACK: 0, or the negative errno of the NLMSG_ERROR. */
static int transact(struct req *r, char *buf, int *family)
{
	ssize_t len;

	if (send(fd, r, r->n.nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		struct nlmsghdr *h;

		len = recv(fd, buf, BUF, 0);
		if (len < 0)
			return -errno;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_seq != r->n.nlmsg_seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR)
				return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
			if (family && h->nlmsg_type == GENL_ID_CTRL) {
				struct genlmsghdr *g = NLMSG_DATA(h);
				struct nlattr *a = (struct nlattr *)((char *)g + GENL_HDRLEN);
				int rem = h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN);

				for (; rem >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rem;
				     rem -= NLA_ALIGN(a->nla_len),
				     a = (struct nlattr *)((char *)a + NLA_ALIGN(a->nla_len)))
					if (a->nla_type == CTRL_ATTR_FAMILY_ID)
						*family = *(uint16_t *)((char *)a + NLA_HDRLEN);
			}
		}
	}
}

static int b64(const char *in, uint8_t out[WGH_KEY_LEN])
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint32_t acc = 0;
	int bits = 0, n = 0;

	for (; *in && *in != '='; ++in) {
		const char *p = strchr(tab, *in);

		if (!p)
			return -1;
		acc = acc << 6 | (uint32_t)(p - tab);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (n == WGH_KEY_LEN)
				return -1;
			out[n++] = acc >> bits & 0xff;
		}
	}
	return n == WGH_KEY_LEN ? 0 : -1;
}

int main(int argc, char **argv)
{
	static char buf[BUF];
	uint8_t key[WGH_KEY_LEN];
	unsigned long flips = 0, errors = 0;
	int family = 0, cpu = -1, ncpu, err, last = 0;
	uint32_t ifindex;
	struct timespec now, end;
	struct req r;

	if (argc < 4 || b64(argv[2], key)) {
		fprintf(stderr, "usage: flipc DEV KEY_BASE64 SECONDS [CPU]\n");
		return 2;
	}
	ifindex = if_nametoindex(argv[1]);
	if (!ifindex) {
		perror(argv[1]);
		return 2;
	}
	ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (argc > 4) {
		cpu_set_t set;

		cpu = atoi(argv[4]);
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set)) {
			perror("sched_setaffinity");
			return 2;
		}
	}
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (fd < 0) {
		perror("socket");
		return 2;
	}
	start(&r, GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
	put(&r, CTRL_ATTR_FAMILY_NAME, WGH_GENL_NAME, sizeof(WGH_GENL_NAME));
	err = transact(&r, buf, &family);
	if (err || !family) {
		fprintf(stderr, "no %s genl family: %s\n", WGH_GENL_NAME, strerror(-err));
		return 2;
	}

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += atoi(argv[3]);
	do {
		uint8_t mode = flips & 1 ? WGH_MODE_VANILLA : WGH_MODE_INLINE;

		start(&r, family, WGH_CMD_SET_PEER);
		put(&r, WGH_A_IFINDEX, &ifindex, sizeof(ifindex));
		put(&r, WGH_A_PEER_PUBLIC_KEY, key, WGH_KEY_LEN);
		put(&r, WGH_A_PEER_MODE, &mode, sizeof(mode));
		if (cpu >= 0 && flips % 16 == 0) {
			int32_t core = (int32_t)((flips / 16) % ncpu);

			put(&r, WGH_A_PEER_CORE, &core, sizeof(core));
		}
		err = transact(&r, buf, NULL);
		if (err) {
			++errors;
			last = -err;
		}
		++flips;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (now.tv_sec < end.tv_sec ||
		 (now.tv_sec == end.tv_sec && now.tv_nsec < end.tv_nsec));
	printf("flips %lu errors %lu last_errno %d\n", flips, errors, last);
	return errors ? 1 : 0;
}
