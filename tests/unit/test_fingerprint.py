"""The flood fingerprint is written once in C (bpf/fingerprint.bpf.h) and once
in Python for the tests (tests/integration/fingerprint.py): compile the header
on the host and check that both give the same value for the same frames."""

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from fingerprint import FINGERPRINT_BYTES, fingerprint

BPF = Path(__file__).resolve().parents[2] / "bpf"

HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include <linux/types.h>
#define __always_inline inline __attribute__((always_inline))
#define FINGERPRINT_BYTES %d
#include "fingerprint.bpf.h"
int main(void)
{
    char hex[512];
    while (scanf("%%511s", hex) == 1) {
        unsigned char frame[256] = {0};
        size_t n = strlen(hex) / 2;
        for (size_t i = 0; i < n; i++)
            sscanf(hex + 2 * i, "%%2hhx", &frame[i]);
        __u64 w[FINGERPRINT_BYTES / 8] = {0};
        memcpy(w, frame, FINGERPRINT_BYTES);   /* what follows a short frame: zeroes here */
        memset(frame + n, 0xa5, sizeof(frame) - n);
        __u64 junk[FINGERPRINT_BYTES / 8];
        memcpy(junk, frame, FINGERPRINT_BYTES); /* and here whatever the buffer holds */
        printf("%%llx %%llx\n", (unsigned long long)fingerprint(w, n),
               (unsigned long long)fingerprint(junk, n));
    }
    return 0;
}
"""


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
def test_c_and_python_fingerprints_agree(tmp_path):
    src, exe = tmp_path / "fp.c", tmp_path / "fp"
    src.write_text(HARNESS % FINGERPRINT_BYTES)
    subprocess.run(["cc", "-O1", "-I", str(BPF), "-o", str(exe), str(src)], check=True)
    rng = random.Random(7)
    frames = [bytes(rng.randrange(256) for _ in range(n))
              for n in (14, 42, 60, 63, 64, 65, 100) for _ in range(6)]
    frames.append(bytes(42))
    out = subprocess.run([str(exe)], input="\n".join(f.hex() for f in frames), check=True,
                         capture_output=True, text=True).stdout.split("\n")
    for frame, line in zip(frames, out):
        clean, dirty = (int(x, 16) for x in line.split())
        # Bytes past a short frame never count: a copy that went through
        # userspace comes back in a buffer with other bytes after it.
        assert clean == dirty == fingerprint(frame), (len(frame), line)
    assert len({fingerprint(f) for f in frames}) == len(frames)
