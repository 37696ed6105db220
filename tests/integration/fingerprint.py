"""The flood fingerprint of bpf/fingerprint.bpf.h in Python, for tests that
pick frames by the table slot the kernel will give them (a direct-mapped table
forgets the older of two frames of one slot, by design).
tests/unit/test_fingerprint.py compiles the header on the host and checks that
both give the same value for the same frames."""

from tracer import abi

FINGERPRINT_BYTES = abi.CONST["FINGERPRINT_BYTES"]
FLOOD_KEYS_MAX = abi.CONST["FLOOD_KEYS_MAX"]
M64 = (1 << 64) - 1
K_LEN = 0x9E3779B97F4A7C15
K = (0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3,
     0x1D8E4E27C47D124F, 0xEB44ACCAB455D165, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


def fingerprint(frame: bytes) -> int:
    """Words of the first FINGERPRINT_BYTES (little-endian, zero past the
    frame) times their own odd constants, plus the length's, then a final mix."""
    n = min(len(frame), FINGERPRINT_BYTES)
    words = [int.from_bytes(frame[i:i + 8][:max(0, n - i)].ljust(8, b"\0"), "little")
             for i in range(0, FINGERPRINT_BYTES, 8)]
    h = (n * K_LEN + sum(w * k for w, k in zip(words, K))) & M64
    h ^= h >> 31
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M64
    return h ^ (h >> 31)


def flood_slot(frame: bytes) -> int:
    """The flood table slot: the fingerprint's low bits (port_flood.bpf.h flood_entries())."""
    return fingerprint(frame) & (FLOOD_KEYS_MAX - 1)
