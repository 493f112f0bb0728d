#!/usr/bin/env python3
"""Writes a C file defining `const char NAME[]` holding the bytes of INPUT.

usage: embed.py NAME INPUT OUTPUT.c
"""
import sys


def main():
    name, src, dst = sys.argv[1:4]
    data = open(src, 'rb').read()
    with open(dst, 'w') as out:
        out.write('/* generated from %s by tools/embed.py */\n' % src.split('/')[-1])
        out.write('const char %s[] = {\n' % name)
        for i in range(0, len(data), 16):
            out.write(''.join('%d,' % b for b in data[i:i + 16]) + '\n')
        out.write('0};\n')


if __name__ == '__main__':
    main()
