#!/usr/bin/env python3
"""The order of a kernel's wgmmas, waits, exponentials, barriers and branches
in an sm_90a cubin, read on a machine without cuobjdump or nvdisasm (this
one). Build the cubin with the plugin's nvcc line plus `-cubin -o F.cubin`.

It classifies each 16-byte instruction by its opcode bits alone, as learned
from one cuobjdump -sass dump of the prefill attention kernels: HGMMA,
WARPGROUP.ARRIVE, WARPGROUP.DEPBAR (with its group count: DEPBAR.1 waits
for all but one wgmma group), MUFU.EX2 (EX2) and other MUFU, BAR, BRA,
SHFL, FMUL, SYNCS.ARRIVE (mbarrier arrives) and SYNCS? (their try-waits).
Everything else is left out. Runs of one class are merged, addresses are
byte offsets into the kernel. It is a skeleton for questions such as
"does the wait for P V come before or after the softmax's exponentials";
check any answer that matters in a real dump on the device machine.

Usage: sass_skeleton.py F.cubin [KERNEL-NAME-PART]"""
import struct
import sys


def sections(data):
    shoff = struct.unpack_from('<Q', data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3a)
    shs = [struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize) for i in range(shnum)]
    strtab = shs[shstrndx][4]

    def name(n):
        return data[strtab + n:data.index(b'\0', strtab + n)].decode()
    return [(name(h[0]), h[4], h[5]) for h in shs]


def classify(w0, w1):
    op = w0 & 0xfff
    if op in (0x9f0, 0xdf0):
        return 'HGMMA'
    if op == 0x308:
        return 'EX2' if (w1 >> 8) & 0x3f == 0x08 else 'MUFU'
    if op == 0x9c5:
        return 'DEPBAR.%d' % ((w1 >> 8) & 0xff) if w0 & (1 << 47) else 'WG.ARRIVE'
    return {0x947: 'BRA', 0xb1d: 'BAR', 0xf89: 'SHFL', 0x9a7: 'SYNCS.ARRIVE', 0x5a7: 'SYNCS?',
            0x220: 'FMUL', 0x820: 'FMUL'}.get(op)


def main():
    data = open(sys.argv[1], 'rb').read()
    want = sys.argv[2] if len(sys.argv) > 2 else ''
    for name, off, size in sections(data):
        if not name.startswith('.text.') or want not in name:
            continue
        print('==', name[6:], size // 16, 'instructions')
        runs = []
        for i in range(size // 16):
            c = classify(*struct.unpack_from('<QQ', data, off + 16 * i))
            if c is None:
                continue
            if runs and runs[-1][1] == c and c in ('EX2', 'HGMMA', 'FMUL', 'SHFL'):
                runs[-1][2] += 1
            else:
                runs.append([i * 16, c, 1])
        print(' | '.join('%05x %s%s' % (a, c, '' if n == 1 else 'x%d' % n) for a, c, n in runs))


if __name__ == '__main__':
    main()
