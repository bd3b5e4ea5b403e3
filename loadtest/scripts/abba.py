#!/usr/bin/env python3
"""Paired before/after comparison of two wsgate binaries with wsgate-load (ABBA order).

    python3 loadtest/scripts/abba.py <binary A> <binary B> [pairs] [scenario,...]

For each scenario (connect, echo, fanout) and each pair, a fresh server of each binary is
started pinned to CPU 0 (one worker) and wsgate-load runs pinned to CPU 1; the order within
a pair alternates (A B, then B A). The figure compared is the scenario's count per second of
server CPU (read from /proc by wsgate-load). Prints each pair's B/A ratio and, per scenario,
the median ratio and its spread. Run it with two identical builds first to see how much of a
difference this machine can show. Loopback only; every run is bounded (120 s).
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOAD = os.path.join(ROOT, "target", "release", "wsgate-load")
ENV = dict(os.environ, WSGATE_JWT_SECRET="s", WSGATE_API_KEY="test-api-key-0123456789")
SCENARIOS = {
    "connect": (["connect", "--sessions", "20000", "--concurrency", "64"], "sessions"),
    "echo": (["echo", "--connections", "100", "--in-flight", "8", "--messages", "10000"], "echoed"),
    "fanout": (["fanout", "--members", "1000", "--publishers", "1", "--in-flight", "32",
                "--messages", "10000"], "deliveries"),
}


def run(binary, port, args, key):
    server = subprocess.Popen(
        ["taskset", "-c", "0", binary, "--listen", f"127.0.0.1:{port}", "--workers", "1",
         "--allowed-origins", "*"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        out = subprocess.run(
            [LOAD, "--url", f"ws://127.0.0.1:{port}/ws", "--pin-cores", "--first-cpu", "1",
             "--server-pid", str(server.pid), "--json"] + args,
            env=ENV, capture_output=True, text=True, timeout=120).stdout
        report = json.loads(out[:out.rindex("}") + 1])
        if not report.get("ok"):
            raise RuntimeError(f"run not ok: {report.get('errors')}")
        return report[key] / report["server_cpu"]["seconds"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    a, b = sys.argv[1], sys.argv[2]
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    wanted = sys.argv[4].split(",") if len(sys.argv) > 4 else list(SCENARIOS)
    port = 18400
    summary = {}
    for name in wanted:
        args, key = SCENARIOS[name]
        ratios = []
        for p in range(pairs):
            order = [("A", a), ("B", b)] if p % 2 == 0 else [("B", b), ("A", a)]
            figures = {}
            for tag, binary in order:
                port += 1
                figures[tag] = run(binary, port, args, key)
            ratios.append(figures["B"] / figures["A"])
            print(f"{name} pair {p}: A {figures['A']:.0f}, B {figures['B']:.0f} per server "
                  f"CPU-s, B/A {ratios[-1]:.3f}", flush=True)
        summary[name] = ratios
    for name, ratios in summary.items():
        print(f"{name}: median B/A {statistics.median(ratios):.3f}, "
              f"spread {min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} pairs)")


if __name__ == "__main__":
    main()
