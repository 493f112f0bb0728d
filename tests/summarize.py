#!/usr/bin/env python3
"""Counts TAP results in meson's testlog.json and prints the closing line
"N passed, N failed, N skipped". A test that printed no TAP counts as one
case by its exit status. Exits 1 when anything failed."""
import json
import re
import sys


def main():
    passed = failed = skipped = 0
    with open(sys.argv[1]) as log:
        for line in log:
            test = json.loads(line)
            lines = re.findall(r'^(?:ok|not ok)\b[^\n]*', test.get('stdout', ''), re.M)
            if not lines:
                if test['result'] in ('OK', 'EXPECTEDFAIL'):
                    passed += 1
                elif test['result'] == 'SKIP':
                    skipped += 1
                else:
                    failed += 1
                    print('FAILED: %s (%s)' % (test['name'], test['result']))
                continue
            for text in lines:
                if text.startswith('not ok'):
                    failed += 1
                    print('FAILED: %s: %s' % (test['name'], text))
                elif '# SKIP' in text:
                    skipped += 1
                else:
                    passed += 1
            # a crash after some cases still fails the run
            if test['result'] not in ('OK', 'SKIP', 'EXPECTEDFAIL') and 'not ok' not in test.get('stdout', ''):
                failed += 1
                print('FAILED: %s exited with %s' % (test['name'], test['result']))
    print('%d passed, %d failed, %d skipped' % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
