#!/usr/bin/env python3
"""Judge an Autobahn|Testsuite fuzzingclient report directory (index.json + per-case json).

    python3 check_results.py echo <report-dir> [--expect-count N]
    python3 check_results.py gateway <report-dir>

echo:    prints the count of each behavior and a per-section table; fails if any case
         is FAILED (its behavior, or its close behavior: wrong endpoint closed, handshake
         never completed), if fewer than cases.ECHO_MIN_CASES ran, or if the number run
         differs from --expect-count (what wstest announced it would run).
gateway: for every case in cases.GATEWAY, reads the server's close code from the
         per-case report ("remoteCloseCode") and requires the RFC code, whatever the
         suite's own verdict (the suite also passes a bare TCP drop); also fails on a
         FAILED verdict or a case that did not run. Prints one row per case.
Exit status: 0 all good, 1 a check failed or the reports are missing (2: bad usage).
"""

import argparse
import json
import os
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases  # noqa: E402

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
MAX_DETAILED = 25  # FAILED cases printed with details; the rest by id only


def load(report_dir):
    index_path = os.path.join(report_dir, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit("error: cannot read %s: %s" % (index_path, e)) from None
    if cases.AGENT not in index:
        raise SystemExit(
            "error: %s has no agent %r (agents: %s)" % (index_path, cases.AGENT, ", ".join(index) or "none")
        )
    return index[cases.AGENT]


def detail(report_dir, entry):
    """The per-case report, or {} if it is missing (reported, not fatal on its own)."""
    try:
        with open(os.path.join(report_dir, entry["reportfile"])) as f:
            return json.load(f)
    except (OSError, ValueError, KeyError):
        return {}


def one_line(s, limit=110):
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def case_failed(entry):
    return entry.get("behavior") == "FAILED" or entry.get("behaviorClose") == "FAILED"


def check_echo(report_dir, expect_count):
    index = load(report_dir)
    ids = sorted(index, key=cases.case_key)
    beh = Counter(index[c].get("behavior") for c in ids)
    close = Counter(index[c].get("behaviorClose") for c in ids)

    print("Autobahn fuzzingclient, echo mode: %d cases, agent %s, reports in %s" % (len(ids), cases.AGENT, report_dir))
    print()
    print("%-15s %6s" % ("behavior", "cases"))
    for b in BEHAVIORS + sorted(set(beh) - set(BEHAVIORS)):
        print("%-15s %6d" % (b, beh.get(b, 0)))
    print("close behavior: " + ", ".join("%s %d" % (k, v) for k, v in sorted(close.items())))
    print()

    per_section = defaultdict(Counter)
    for c in ids:
        per_section[c.split(".")[0]][index[c].get("behavior")] += 1
    print("%-8s" % "section" + "".join("%15s" % b for b in BEHAVIORS))
    for sec in sorted(per_section, key=int):
        print("%-8s" % sec + "".join("%15d" % per_section[sec].get(b, 0) for b in BEHAVIORS))
    print()

    for label in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
        got = [c for c in ids if index[c].get("behavior") == label]
        if got:
            print("%s: %s" % (label, " ".join(got)))
    odd_close = [c for c in ids if index[c].get("behaviorClose") not in ("OK", "INFORMATIONAL", "FAILED")]
    if odd_close:
        print("close behavior not OK (not fatal): " + ", ".join(
            "%s %s (code %s)" % (c, index[c].get("behaviorClose"), index[c].get("remoteCloseCode")) for c in odd_close))

    problems = []
    failed = [c for c in ids if case_failed(index[c])]
    if failed:
        print()
        print("FAILED cases:")
        for n, c in enumerate(failed):
            e = index[c]
            if n == MAX_DETAILED:
                print("  ... and %d more: %s" % (len(failed) - n, " ".join(failed[n:])))
                break
            d = detail(report_dir, e)
            print("  %-8s behavior=%s behaviorClose=%s remoteCloseCode=%s remoteCloseReason=%r" % (
                c, e.get("behavior"), e.get("behaviorClose"), e.get("remoteCloseCode"), d.get("remoteCloseReason")))
            if d:
                print("           description: %s" % one_line(d.get("description", "")))
                print("           expected:    %s" % one_line(d.get("expectation", "")))
                print("           result:      %s / %s" % (one_line(d.get("result", ""), 60), one_line(d.get("resultClose", ""), 60)))
        problems.append("%d case(s) FAILED" % len(failed))
    if len(ids) < cases.ECHO_MIN_CASES:
        problems.append("only %d cases ran (expected at least %d): the run broke off" % (len(ids), cases.ECHO_MIN_CASES))
    if expect_count is not None and len(ids) != expect_count:
        problems.append("wstest announced %d cases but %d were reported" % (expect_count, len(ids)))
    return problems


def fmt_codes(codes):
    return "/".join("none" if c is None else str(c) for c in sorted(codes, key=lambda c: -1 if c is None else c))


def check_gateway(report_dir):
    index = load(report_dir)
    expected = cases.GATEWAY
    ids = sorted(expected, key=cases.case_key)

    print("Autobahn fuzzingclient, gateway mode (before authentication): %d cases, reports in %s" % (len(ids), report_dir))
    print()
    print("%-8s %-8s %-14s %-6s %-13s %-16s %s" % ("case", "group", "expected", "sent", "behavior", "close behavior", "verdict"))
    problems = []
    groups = Counter()
    for c in ids:
        group, codes = expected[c]
        e = index.get(c)
        if e is None:
            print("%-8s %-8s %-14s %-6s %-13s %-16s %s" % (c, group, fmt_codes(codes), "-", "-", "-", "NOT RUN"))
            problems.append("%s did not run" % c)
            continue
        d = detail(report_dir, e)
        if not d:
            problems.append("%s: per-case report %s missing" % (c, e.get("reportfile")))
        # The close code the server put in its close frame (None: no close frame).
        sent = d.get("remoteCloseCode", e.get("remoteCloseCode"))
        why = []
        if sent not in codes:
            why.append("close code %s, RFC wants %s" % ("none (no close frame)" if sent is None else sent, fmt_codes(codes)))
        if e.get("behavior") not in PASSING:
            why.append("suite behavior %s" % e.get("behavior"))
        if group == "control" and e.get("behaviorClose") != "OK":
            why.append("close behavior %s" % e.get("behaviorClose"))
        elif e.get("behaviorClose") == "FAILED":
            why.append("close behavior FAILED (%s)" % one_line(d.get("resultClose", ""), 60))
        verdict = "ok" if not why else "BAD: " + "; ".join(why)
        if why:
            problems.append("%s: %s" % (c, "; ".join(why)))
        else:
            groups[group] += 1
        print("%-8s %-8s %-14s %-6s %-13s %-16s %s" % (
            c, group, fmt_codes(codes), "none" if sent is None else sent, e.get("behavior"), e.get("behaviorClose"), verdict))
    extra = sorted(set(index) - set(expected), key=cases.case_key)
    if extra:
        print("(reports also hold cases outside the gateway list, ignored: %s)" % " ".join(extra))
    print()
    totals = Counter(g for g, _ in expected.values())
    print("passed: " + ", ".join("%s %d/%d" % (g, groups[g], totals[g]) for g in sorted(totals)))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["echo", "gateway"])
    ap.add_argument("report_dir")
    ap.add_argument("--expect-count", type=int, default=None, help="echo: number of cases wstest announced")
    args = ap.parse_args()
    if args.mode == "echo":
        problems = check_echo(args.report_dir, args.expect_count)
    else:
        problems = check_gateway(args.report_dir)
    print()
    if problems:
        print("AUTOBAHN %s: FAIL" % args.mode.upper())
        for p in problems:
            print("  - " + p)
        return 1
    print("AUTOBAHN %s: PASS" % args.mode.upper())
    return 0


if __name__ == "__main__":
    sys.exit(main())
