/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fingerprint.bpf.h - the flood fingerprint: which flooded frames are copies
 * of one another (ports.bpf.c). Plain C on fixed-width types, so the host
 * compiler builds it too (tests/unit/test_fingerprint.py).
 */
#ifndef FINGERPRINT_BPF_H
#define FINGERPRINT_BPF_H

/* A 64-bit hash of the frame's first FINGERPRINT_BYTES, never past its end:
 * a frame that went through userspace (a VPN tap) comes back in a new buffer
 * whose bytes after the frame differ. Word i of the frame (little-endian,
 * zero past its end) is multiplied by its own odd constant FP_K(i) and the
 * products are summed with the length's, so no step waits for the previous
 * one's multiply (a chained mix cost twice as long, on every flooded frame
 * twice); a final mix (fp_mix()) makes every bit depend on every word, since
 * the low bits pick the table slot and the high ones are the tag. tcx sums
 * the words where they lie (tc_fingerprint() in ports.bpf.c, with FP_K
 * and fp_mix() from here), a tracepoint a kernel read's copy
 * (fingerprint()); both give the same value. tests/integration/fingerprint.py
 * is the Python twin the tests use to pick frames, and
 * tests/unit/test_fingerprint.py compiles this header on the host and checks
 * the two agree. */
_Static_assert(FINGERPRINT_BYTES == 64, "the fingerprint sums eight words");
#define FP_K_LEN 0x9E3779B97F4A7C15ULL
#define FP_K(i) ((i) == 0 ? 0xA0761D6478BD642FULL : (i) == 1 ? 0xE7037ED1A0B428DBULL : \
		 (i) == 2 ? 0x8EBC6AF09C88C6E3ULL : (i) == 3 ? 0x589965CC75374CC3ULL : \
		 (i) == 4 ? 0x1D8E4E27C47D124FULL : (i) == 5 ? 0xEB44ACCAB455D165ULL : \
		 (i) == 6 ? 0xC2B2AE3D27D4EB4FULL : 0x165667B19E3779F9ULL)

static __always_inline __u64 fp_mix(__u64 h)
{
	h ^= h >> 31;
	h *= 0xBF58476D1CE4E5B9ULL;
	h ^= h >> 27;
	h *= 0x94D049BB133111EBULL;
	return h ^ (h >> 31);
}

/* From a kernel read's copy `w` of FINGERPRINT_BYTES, which holds whatever
 * follows a short frame in its buffer: clipped to the frame here. */
static __always_inline __u64 fingerprint(const __u64 *w, __u32 len)
{
	__u32 n = len < FINGERPRINT_BYTES ? len : FINGERPRINT_BYTES;
	__u64 h = n * FP_K_LEN;
#pragma unroll
	for (int i = 0; i < FINGERPRINT_BYTES / 8; i++) {
		__u64 x = w[i];
		__s32 rem = (__s32)n - i * 8;
		if (rem <= 0)
			x = 0;
		else if (rem < 8)
			x &= (1ULL << (rem * 8)) - 1;
		h += x * FP_K(i);
	}
	return fp_mix(h);
}

#endif /* FINGERPRINT_BPF_H */
