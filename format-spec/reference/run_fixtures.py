#!/usr/bin/env python3
"""Run kvfread against the fixtures: python3 run_fixtures.py FIXTURES_DIR

  FIXTURES_DIR/good/NAME/     must be accepted, and `cat` must print exactly FIXTURES_DIR/good/NAME.jsonl
  FIXTURES_DIR/corrupt/NAME/  must be rejected: exit status 1, nothing on stdout

Prints one line per fixture and exits 1 if any fails (or if there are no fixtures at all).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvfread  # noqa: E402


def first_difference(got, want):
    """A short hint: the first line where the two renderings differ."""
    got_lines, want_lines = got.split(b"\n"), want.split(b"\n")
    for number, (g, w) in enumerate(zip(got_lines, want_lines), 1):
        if g != w:
            column = next((i for i, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
            start = max(0, column - 30)
            return (f"line {number} column {column + 1}: got ...{g[start:column + 50]!r}, "
                    f"want ...{w[start:column + 50]!r}")
    return f"got {len(got_lines) - 1} lines, want {len(want_lines) - 1}"


def check_good(root, name):
    expected_path = os.path.join(root, "good", name + ".jsonl")
    if not os.path.isfile(expected_path):
        return f"FAIL good/{name}: no {name}.jsonl next to it"
    with open(expected_path, "rb") as f:
        want = f.read()
    status, out, err = kvfread.run_cat(os.path.join(root, "good", name))
    if status != 0:
        return f"FAIL good/{name}: rejected: {err.strip()}"
    if out != want:
        return f"FAIL good/{name}: output differs: {first_difference(out, want)}"
    return f"ok good/{name}"


def check_corrupt(root, name):
    status, out, err = kvfread.run_cat(os.path.join(root, "corrupt", name))
    if status == 0:
        return f"FAIL corrupt/{name}: accepted ({len(out.splitlines())} lines rendered)"
    if out:
        return f"FAIL corrupt/{name}: rejected but printed to stdout"
    if "internal error" in err:  # a crash of the reader is no verdict on the fixture
        return f"FAIL corrupt/{name}: {err.strip()}"
    return f"ok corrupt/{name}  ({err.strip()})"


def subdirs(path):
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n)))


def main(argv):
    if len(argv) != 1:
        sys.stderr.write("usage: run_fixtures.py FIXTURES_DIR\n")
        return 2
    root = argv[0]
    results = [check_good(root, n) for n in subdirs(os.path.join(root, "good"))]
    results += [check_corrupt(root, n) for n in subdirs(os.path.join(root, "corrupt"))]
    for line in results:
        print(line)
    failed = sum(not line.startswith("ok ") for line in results)
    if not results:
        print(f"FAIL: no fixtures under {root}/good or {root}/corrupt")
        return 1
    print(f"{len(results) - failed} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
