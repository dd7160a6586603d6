#!/usr/bin/env python3
"""Judges ctest's skipped and disabled tests against .ci/skip-allowlist.

usage: check-skips.py JUNIT_XML ALLOWLIST

JUNIT_XML is `ctest --output-junit`. A skipped test passes only when its output names at least one
"kernel-feature:<name>:" (or "cpu-feature:") reason and every such reason is on the allow-list.
Every other skip, a SKIP_RETURN_CODE skip, a disabled test and a test that did not run is printed
with its reason; exit 1 if there is any, 2 if the input is unusable, 0 otherwise.
"""
import re
import sys
import xml.etree.ElementTree as ET

REASON = re.compile(r"\b((?:kernel|cpu)-feature:[A-Za-z0-9_.+-]+):")


def allowlist(path):
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                if not REASON.fullmatch(line + ":"):
                    raise ValueError(f"{path}: not a '<kind>-feature:<name>' line: {line!r}")
                names.add(line)
    return names


def skip_text(out):
    """gtest's skip message: the lines after 'Skipped' up to the '[  SKIPPED ]' line."""
    m = re.search(r"Skipped\n(.*?)\n\[  SKIPPED \]", out, re.S)
    return (m.group(1) if m else out[-600:]).strip()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        allowed = allowlist(sys.argv[2])
        cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
        cases = list(cases)
    except (OSError, ValueError, ET.ParseError) as e:
        print(f"check-skips: {e}", file=sys.stderr)
        return 2
    if not cases:
        print(f"check-skips: {sys.argv[1]} lists no test", file=sys.stderr)
        return 2
    ok_skips, bad = [], []
    for c in cases:
        name, status = c.get("name"), c.get("status")
        out = c.findtext("system-out") or ""
        skipped = c.find("skipped")
        if status == "disabled":
            bad.append((name, "disabled (a DISABLED_ test or the DISABLED property)"))
        elif skipped is not None:
            msg = skipped.get("message", "")
            reasons = set(REASON.findall(out))
            text = skip_text(out)
            if msg.startswith("SKIP_RETURN_CODE"):
                bad.append((name, f"{msg}: {text}"))
            elif not reasons:
                bad.append((name, f"no kernel-feature reason: {text}"))
            elif not reasons <= allowed:
                bad.append((name, f"not on the allow-list ({', '.join(sorted(reasons - allowed))}): {text}"))
            else:
                ok_skips.append((name, text))
        elif status == "notrun":
            bad.append((name, "did not run: " + (out.strip()[-300:] or "(no output)")))
    for name, text in ok_skips:
        print(f"check-skips: allowed skip {name}: {text}")
    for name, text in bad:
        print(f"check-skips: NOT ALLOWED {name}: {text}")
    print(f"check-skips: {len(cases)} tests, {len(ok_skips)} allowed skips, {len(bad)} not allowed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
