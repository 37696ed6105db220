// SPDX-License-Identifier: GPL-2.0-only
/* The lab's frame sender: copies of one Ethernet frame out of IFNAME through
 * a transmit-only packet socket, until COUNT frames or SECONDS have gone,
 * whichever first; at RATE frames/s when given and > 0, else as fast as it can.
 * Frame i carries base + (i % DISTINCT) as a big-endian u32 at OFFSET (base:
 * the template's u32 there; DISTINCT <= 1: the template unchanged).
 *
 *   sender [-f] IFNAME COUNT SECONDS FRAME-HEX OFFSET DISTINCT [RATE]
 *
 * Prints "SENT REFUSED".  REFUSED frames were dropped by the device's xmit
 * (ENOBUFS: a veth whose peer's MTU is too small, a full backlog): they left
 * the socket and count as sent, so exactly COUNT frames leave, never more.
 *
 * Without -f: one frame per sendmmsg() call, through the qdisc layer (so
 * net:net_dev_queue fires, which the lab's tracefs ground truth needs to
 * attribute drops), and every frame's fate is known.
 * -f (the bench): batches of 64 per call and PACKET_QDISC_BYPASS.  A device
 * drop in the middle of a batch is then not seen (sendmmsg() returns the
 * frames before it and loses the error), so SENT may undercount by those.
 * lab/children/sender.py does the same in Python where no C compiler exists. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int unhex(const char *s, unsigned char *out, int max)
{
	int n = 0;

	for (; s[0] && s[1] && n < max; s += 2)
		if (sscanf(s, "%2hhx", &out[n++]) != 1)
			return -1;
	return n;
}

int main(int argc, char **argv)
{
	int fast = 0, opt;

	while ((opt = getopt(argc, argv, "f")) != -1) {
		if (opt != 'f')
			goto usage;
		fast = 1;
	}
	argc -= optind - 1;
	argv += optind - 1;
	if (argc != 7 && argc != 8) {
usage:
		fprintf(stderr, "usage: sender [-f] IFNAME COUNT SECONDS FRAME-HEX OFFSET DISTINCT [RATE]\n");
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	long long count = atoll(argv[2]);
	double seconds = atof(argv[3]);
	unsigned char tmpl[2048];
	int len = unhex(argv[4], tmpl, sizeof(tmpl));
	int offset = atoi(argv[5]);
	unsigned long distinct = strtoul(argv[6], NULL, 10);
	int batch = fast ? BATCH : 1;

	if (len < 14 || offset < 0 || offset + 4 > len) {
		fprintf(stderr, "bad frame or offset\n");
		return 2;
	}
	int s = socket(AF_PACKET, SOCK_RAW, 0);   /* protocol 0: transmit only, never receives */

	if (s < 0) {
		perror("socket");
		return 2;
	}
	int one = 1;

	if (fast)
		setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	struct sockaddr_ll addr;

	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_ifindex = if_nametoindex(argv[1]);
	if (!addr.sll_ifindex || bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("bind");
		return 2;
	}
	static unsigned char frames[BATCH][2048];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];

	memset(msgs, 0, sizeof(msgs));
	unsigned int base = (unsigned int)tmpl[offset] << 24 | (unsigned int)tmpl[offset + 1] << 16 |
			    (unsigned int)tmpl[offset + 2] << 8 | tmpl[offset + 3];
	for (int i = 0; i < BATCH; i++) {
		memcpy(frames[i], tmpl, len);
		iov[i].iov_base = frames[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long long sent = 0, refused = 0;
	double rate = argc == 8 ? atof(argv[7]) : 0;
	double start = now(), end = start + seconds;

	while (sent < count && !stop) {
		if (rate > 0) {   /* paced: no frame before its time */
			double due = start + sent / rate;
			double t = now();

			if (t < due) {
				struct timespec ts = { 0, (long)((due - t) * 1e9) };

				nanosleep(&ts, NULL);
				continue;
			}
		}
		int n = count - sent < batch ? (int)(count - sent) : batch;

		if (distinct > 1)
			for (int i = 0; i < n; i++) {
				unsigned int v = base + (unsigned int)((sent + i) % distinct);

				frames[i][offset] = v >> 24;
				frames[i][offset + 1] = v >> 16;
				frames[i][offset + 2] = v >> 8;
				frames[i][offset + 3] = v;
			}
		int r = sendmmsg(s, msgs, n, 0);

		if (r >= 0) {
			sent += r;
		} else if (errno == ENOBUFS) {
			/* the device dropped the first frame after it left the socket:
			 * it was sent, and sending it again would exceed COUNT */
			sent++;
			refused++;
		} else if (errno != EAGAIN && errno != EINTR) {
			perror("sendmmsg");
			return 3;
		}
		if (now() >= end)
			break;
	}
	printf("%lld %lld\n", sent, refused);
	return 0;
}
