"""Counts for .ci/run: `count.py collected` reads `pytest --collect-only -q` on stdin and prints how many tests
it collected; `count.py passed JUNIT_XML` prints how many tests of a junit report passed (neither failed, errored
nor skipped)."""

import re
import sys
import xml.etree.ElementTree as ET

if sys.argv[1] == "collected":
    text = sys.stdin.read()
    m = re.search(r"^(\d+) tests? collected", text, re.M)
    if not m:
        sys.exit(f"count.py: no 'N tests collected' line in pytest's output:\n{text[-2000:]}")
    print(m.group(1))
else:
    cases = ET.parse(sys.argv[2]).getroot().iter("testcase")
    print(sum(1 for c in cases if not any(c.find(tag) is not None for tag in ("failure", "error", "skipped"))))
