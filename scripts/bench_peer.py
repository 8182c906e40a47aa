#!/usr/bin/env python3
"""The two halves of scripts/bench-peer.sh.

* `peer_app()` is the python peer, for uvicorn's --factory: scim2-server's
  own ASGI application (ASGIApplication over AsyncInMemoryStorage), with the
  schemas, resource types and service provider configuration that the
  `scim2-server` command serves, and the static bearer token of
  $BENCH_PEER_TOKEN, checked as the command's --bearer-token checks it. (The
  command itself only serves through wsgiref.) Under uvicorn, run from the
  venv that holds scim2-server:
      uvicorn --app-dir scripts --factory bench_peer:peer_app --port 0
  Its SCIM root is /v2.
* `python3 scripts/bench_peer.py PEER.json ROLLCALL.json ...` prints the
  side-by-side table of load.py results, ratio rollcall/peer; the JSON files
  come in pairs, one pair per population, and a missing file leaves its
  column empty. Standard library only.
"""

import json
import os
import sys


def peer_app():
    from scim2_models import ScimProvider
    from scim2_models import UnauthorizedException

    from scim2_server.applications.asgi import ASGIApplication
    from scim2_server.memory import AsyncInMemoryStorage
    from scim2_server.service import ScimService
    from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
    from scim2_server.utils import load_default_resource_types
    from scim2_server.utils import load_default_schemas
    from scim2_server.utils import load_default_service_provider_config

    token = os.environ["BENCH_PEER_TOKEN"]
    config = load_default_service_provider_config()
    config.authentication_schemes = [*(config.authentication_schemes or []), BEARER_TOKEN_SCHEME]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )

    class BearerTokenApplication(ASGIApplication):
        def check_auth(self, request):
            scheme, _, given = (request.header("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or given != token:
                raise UnauthorizedException

    return BearerTokenApplication(AsyncInMemoryStorage(), provider, ScimService(provider))


# (label, phase names in order of preference: the wrk phase, else the python one)
ROWS = [
    ("lookup c8 (userName eq)", ["lookup-wrk-c8", "lookup-c8"]),
    ("create c8 (python client)", ["create-c8"]),
    ("create c8 (wrk)", ["create-wrk-c8"]),
    ("patch c8", ["patch-wrk-c8", "patch-c8"]),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def phase(report, names):
    if report is None:
        return None
    by_name = {p["phase"]: p for p in report["phases"]}
    return next((by_name[n] for n in names if n in by_name), None)


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def fmt(value, unit=""):
    return "-" if value is None else f"{value:,.1f}{unit}"


def errors(p):
    return ",".join(f"{k}={v}" for k, v in p["errors"].items()) if p and p["errors"] else ""


def table(peer_path, rollcall_path):
    peer, rollcall = load(peer_path), load(rollcall_path)
    if peer is None and rollcall is None:
        print(f"\nneither {peer_path} nor {rollcall_path} is there")
        return
    population = (peer or rollcall)["params"]["population"]
    print(f"\npopulation {population:,}: ok req/s (p99 ms), peer = scim2-server 0.8.3 under uvicorn")
    print(f"| {'phase':<26} | {'peer':>20} | {'rollcall':>20} | {'rollcall/peer':>13} |")
    print(f"| {'-' * 26} | {'-' * 20}:| {'-' * 20}:| {'-' * 13}:|")
    notes = []
    for label, names in ROWS:
        a, b = phase(peer, names), phase(rollcall, names)
        if a is None and b is None:
            continue
        cells = []
        for side, p in (("peer", a), ("rollcall", b)):
            cells.append("-" if p is None else f"{p['ok_per_s']:,.1f} ({p['p99_ms']:,.1f})")
            if errors(p):
                notes.append(f"{side} {p['phase']}: {errors(p)}")
        r = ratio(b and b["ok_per_s"], a and a["ok_per_s"])
        print(f"| {label:<26} | {cells[0]:>20} | {cells[1]:>20} | {r:>13} |")
    rss = [r and r.get("peak_rss_mib") for r in (peer, rollcall)]
    rss_ratio = ratio(rss[1], rss[0])
    print(f"| {'peak RSS (VmHWM)':<26} | {fmt(rss[0], ' MiB'):>20} | {fmt(rss[1], ' MiB'):>20} | {rss_ratio:>13} |")
    for side, r in (("peer", peer), ("rollcall", rollcall)):
        if r is not None and r["users_created"] < r["params"]["population"]:
            print(f"  warning: {side} has {r['users_created']:,} users of load.py, not "
                  f"{r['params']['population']:,} (a phase hit --phase-seconds?)")
    for note in notes:
        print(f"  errors: {note}")


def main(argv):
    if not argv or len(argv) % 2:
        sys.exit("usage: bench_peer.py PEER.json ROLLCALL.json [PEER.json ROLLCALL.json ...]")
    for i in range(0, len(argv), 2):
        table(argv[i], argv[i + 1])


if __name__ == "__main__":
    main(sys.argv[1:])
