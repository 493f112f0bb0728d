#!/usr/bin/env python3
"""Prepares clang-14's textual LLVM IR for llvm-spirv-14.

Two things the translator of that release gets wrong for -O2 code:
- `freeze` (emitted by the DivRemPairs pass when it rewrites X % Y as
  X - (X / Y) * Y) cannot be translated. Later translators map a freeze to
  its operand; so does this. The frozen values here are work-item indices
  and sizes, never undef or poison, so nothing changes.
- Blocks are written in LLVM's layout, where a block may precede its
  dominator, which SPIR-V forbids (spirv-val rejects the module). Blocks
  are put in reverse post-order here, which satisfies the rule.

The input must have every value and block named (opt -passes=instnamer),
so that lines can move and be removed without renumbering.

usage: spirv_prep.py INPUT.ll OUTPUT.ll
"""
import re
import sys

NAME = r'%[-\w.$"]+'
FREEZE = re.compile(r'^\s*(' + NAME + r') = freeze \S+ (\S+)\s*$')
LABEL = re.compile(r'^([-\w.$]+):')
SUCCESSOR = re.compile(r'label %([-\w.$]+)')


def unfreeze(lines):
    kept, replaced = [], {}
    for line in lines:
        m = FREEZE.match(line)
        if m:
            replaced[m.group(1)] = replaced.get(m.group(2), m.group(2))
        else:
            kept.append(line)
    if not replaced:
        return kept
    # a name ends where the characters of LLVM identifiers end
    names = sorted(replaced, key=len, reverse=True)
    pattern = re.compile('(' + '|'.join(re.escape(n) for n in names) + r')(?![-\w.$])')
    return [pattern.sub(lambda m: replaced[m.group(1)], line) for line in kept]


def reorder(body):
    """Blocks of one function body (the lines between its braces) in
    reverse post-order from the entry block; unreachable ones last."""
    blocks, order = {}, []
    for line in body:
        m = LABEL.match(line)
        if m or not order:
            name = m.group(1) if m else ''
            order.append(name)
            blocks[name] = []
        blocks[order[-1]].append(line)
    successors = {b: SUCCESSOR.findall('\n'.join(blocks[b])) for b in order}
    seen, post = set(), []
    stack = [(order[0], iter(successors[order[0]]))]
    seen.add(order[0])
    while stack:
        block, it = stack[-1]
        nxt = next((s for s in it if s not in seen), None)
        if nxt is None:
            post.append(block)
            stack.pop()
        elif nxt in blocks:
            seen.add(nxt)
            stack.append((nxt, iter(successors[nxt])))
    rpo = post[::-1] + [b for b in order if b not in seen]
    return [line for b in rpo for line in blocks[b]]


def main():
    src, dst = sys.argv[1:3]
    out, body, in_function = [], [], False
    # local names are per function: both fixes work on one body at a time
    for line in open(src).read().split('\n'):
        if in_function:
            if line == '}':
                out.extend(reorder(unfreeze(body)))
                out.append(line)
                in_function, body = False, []
            else:
                body.append(line)
        else:
            out.append(line)
            in_function = line.startswith('define ') and line.rstrip().endswith('{')
    open(dst, 'w').write('\n'.join(out))


if __name__ == '__main__':
    main()
