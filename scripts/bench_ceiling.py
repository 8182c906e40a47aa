#!/usr/bin/env python3
"""Where the SCIM speed targets sit against this machine (BENCHMARKS.md).

Runs ../shared/load/scim_wrk.lua under wrk (one thread, 8 connections, the
load generator's settings) against three servers in turn and prints, per
phase, requests/s, the server's CPU-microseconds per request and wrk's CPU:
  * ceiling: `examples/ceiling.rs`, the same axum stack answering canned
    bodies and doing no work (what HTTP and loopback TCP cost alone);
  * rollcall with `--durability off` (its CPU cost with no fsync at all);
  * rollcall with the default `--durability full`.
Each rollcall gets a fresh database with --users users. Python standard
library only; needs wrk.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WRK_SCRIPT = os.path.join(ROOT, "..", "shared", "load", "scim_wrk.lua")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wait_ready(port):
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/scim/v2/ServiceProviderConfig", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"no server on port {port}")


def wrk(port, pid, mode, token, item_file, seconds):
    env = dict(os.environ, SCIM_MODE=mode, SCIM_PREFIX="/scim/v2", SCIM_TOKEN=token,
               SCIM_FILE=item_file or "", SCIM_RUN=f"c{os.getpid()}{time.monotonic_ns() % 100000}",
               SCIM_THREADS="1")
    before = cpu_seconds(pid)
    run = subprocess.Popen(["wrk", "-t1", "-c8", f"-d{seconds}s", "-s", WRK_SCRIPT, f"http://127.0.0.1:{port}"],
                           env=env, stdout=subprocess.PIPE, text=True)
    output, _ = run.communicate()
    server = cpu_seconds(pid) - before
    line = next((l for l in output.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        sys.exit(f"wrk failed:\n{output}")
    result = json.loads(line[len("WRKJSON "):])
    rate = result["requests"] / (result["duration_us"] / 1e6)
    ok = result["requests"] - result["non2xx"]
    return {"rps": rate, "ok": ok, "server_us_per_request": server * 1e6 / max(result["requests"], 1),
            "server_cpu_pct": server * 100 / seconds, "p99_ms": result["p99_us"] / 1000}


def populate(port, token, users):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    def create(i):
        name = f"ceiling{i}@example.com"
        body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name,
                           "name": {"givenName": "G", "familyName": "F"},
                           "emails": [{"value": name, "type": "work", "primary": True}], "active": True})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/scim/v2/Users", data=body.encode(),
                                         method="POST", headers=headers)
        with urllib.request.urlopen(request) as response:
            return name, json.load(response)["id"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(create, range(users)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "rollcall"))
    parser.add_argument("--ceiling", default=os.path.join(ROOT, "target", "release", "examples", "ceiling"))
    args = parser.parse_args()

    rows = []
    port = 18390
    with tempfile.TemporaryDirectory() as scratch:
        names = os.path.join(scratch, "names")
        ids = os.path.join(scratch, "ids")
        server = subprocess.Popen([args.ceiling, f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        try:
            wait_ready(port)
            with open(names, "w") as out:
                out.write("".join(f"ceiling{i}@example.com\n" for i in range(args.users)))
            with open(ids, "w") as out:
                out.write("".join(f"id{i}\n" for i in range(args.users)))
            for mode, items in (("lookup", names), ("create", None), ("patch", ids)):
                rows.append(("ceiling (canned axum)", mode, wrk(port, server.pid, mode, "x", items, args.seconds)))
        finally:
            server.kill()
            server.wait()

        for durability in ("off", "full"):
            port += 1
            env = dict(os.environ, ROLLCALL_DB=os.path.join(scratch, f"{durability}.db"), ROLLCALL_LOG="warn",
                       ROLLCALL_DURABILITY=durability)
            subprocess.run([args.binary, "tenant", "create", "bench"], env=env, check=True, capture_output=True)
            token = subprocess.run([args.binary, "token", "issue", "--tenant", "bench", "--scope", "scim"], env=env,
                                   check=True, capture_output=True, text=True).stdout.strip()
            server = subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                                      stderr=subprocess.DEVNULL)
            try:
                wait_ready(port)
                created = populate(port, token, args.users)
                with open(names, "w") as out:
                    out.write("".join(f"{name}\n" for name, _ in created))
                with open(ids, "w") as out:
                    out.write("".join(f"{id}\n" for _, id in created))
                for mode, items in (("lookup", names), ("create", None), ("patch", ids)):
                    rows.append((f"rollcall, durability {durability}", mode,
                                 wrk(port, server.pid, mode, token, items, args.seconds)))
            finally:
                server.kill()
                server.wait()

    print(f"| server ({args.users} users) | phase (c8) | requests/s | server CPU-us per request | server CPU | p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, mode, r in rows:
        print(f"| {name} | {mode} | {r['rps']:,.0f} | {r['server_us_per_request']:.0f} | "
              f"{r['server_cpu_pct']:.0f} % | {r['p99_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
