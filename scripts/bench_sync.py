#!/usr/bin/env python3
"""Synchronize at scale against a running rollcall (BENCHMARKS.md).

Creates --users users (Bulk, 1,000 per request) carrying ten mapped
attributes, --groups groups of --users/--groups members each, a mapping of
ten properties and one role binding per group, then times on one
keep-alive connection:
  * the preview (GET /api/v1/provisioning/pending, first page);
  * the Synchronize that applies every join (POST /api/v1/provisioning/sync);
  * a second Synchronize with nothing pending (median of --repeat);
and reads the server's peak RSS (VmHWM) before and after. Python standard
library only.
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:2.0:Metadata"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


class Client:
    def __init__(self, base_url, token):
        url = urllib.parse.urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        started = time.perf_counter()
        self.connection.request(method, path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {text[:500]!r}")
        return (json.loads(text) if text else None), elapsed_ms


def user(i):
    return {
        "schemas": [USER, ENTERPRISE, CUSTOM],
        "userName": f"user{i:06d}@example.com",
        "externalId": f"ext{i}",
        "displayName": f"User {i}",
        "title": f"Title {i % 50}",
        "name": {"givenName": f"Given{i}", "familyName": f"Family{i % 1000}"},
        "emails": [{"value": f"user{i:06d}@example.com", "type": "work", "primary": True}],
        "phoneNumbers": [{"value": f"+1555{i:07d}", "type": "mobile"}],
        ENTERPRISE: {"department": f"Dept {i % 40}", "employeeNumber": str(i),
                     "manager": {"value": "boss"}},
        CUSTOM: {"costCenter": f"CC-{i % 100}"},
    }


MAPPING = {
    "properties": [
        {"property": "email", "source": "emails[type eq \"work\"].value"},
        {"property": "given_name", "source": "name.givenName"},
        {"property": "family_name", "source": "name.familyName"},
        {"property": "display_name", "source": "displayName"},
        {"property": "title", "source": "title"},
        {"property": "mobile", "source": "phoneNumbers[type eq \"mobile\"].value"},
        {"property": "department", "source": f"{ENTERPRISE}:department"},
        {"property": "employee_number", "source": f"{ENTERPRISE}:employeeNumber", "type": "number"},
        {"property": "manager", "source": f"{ENTERPRISE}:manager.value"},
        {"property": "cost_center", "source": f"{CUSTOM}:costCenter"},
    ],
    "app_owned": ["login_method"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="http://host:port (no path)")
    parser.add_argument("--scim-token", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--populate-only", action="store_true",
                        help="stop after creating the users, groups, mapping and bindings (for profiling)")
    args = parser.parse_args()
    scim = Client(args.base_url, args.scim_token)
    admin = Client(args.base_url, args.admin_token)

    def peak_rss_mib():
        with open(f"/proc/{args.server_pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    started = time.perf_counter()
    ids = []
    for first in range(0, args.users, 1000):
        operations = [{"method": "POST", "path": "/Users", "bulkId": f"u{i}", "data": user(i)}
                      for i in range(first, min(first + 1000, args.users))]
        body, _ = scim.send("POST", "/scim/v2/Bulk", {"schemas": [BULK], "Operations": operations})
        for result in body["Operations"]:
            ids.append(result["location"].rsplit("/", 1)[1])
    per_group = max(1, len(ids) // args.groups)
    for first in range(0, args.groups, 100):
        operations = []
        for g in range(first, min(first + 100, args.groups)):
            members = [{"value": id} for id in ids[g * per_group:(g + 1) * per_group]]
            operations.append({"method": "POST", "path": "/Groups", "bulkId": f"g{g}",
                               "data": {"schemas": [GROUP], "displayName": f"Group {g}", "members": members}})
        scim.send("POST", "/scim/v2/Bulk", {"schemas": [BULK], "Operations": operations})
    roles = ["admin", "editor", "viewer", "billing", "auditor"]
    admin.send("PUT", "/api/v1/provisioning/mapping", MAPPING)
    admin.send("PUT", "/api/v1/provisioning/role-bindings", {
        "roles": roles, "default_role": "viewer",
        "bindings": [{"group": f"Group {g}", "role": roles[g % 5]} for g in range(args.groups)],
    })
    populated_s = time.perf_counter() - started
    if args.populate_only:
        print(json.dumps({"populate_s": round(populated_s, 1)}))
        return
    rss_before = peak_rss_mib()

    preview, preview_ms = admin.send("GET", "/api/v1/provisioning/pending?limit=100")
    run, sync_ms = admin.send("POST", "/api/v1/provisioning/sync")
    rss_after = peak_rss_mib()
    noop = []
    for _ in range(args.repeat):
        again, elapsed = admin.send("POST", "/api/v1/provisioning/sync")
        assert all(count == 0 for count in again["counts"].values()), again
        noop.append(elapsed)
    members, _ = admin.send("GET", "/api/v1/members?limit=1")
    sample = members["members"][0]
    print(json.dumps({
        "users": args.users, "groups": args.groups, "populate_s": round(populated_s, 1),
        "preview_ms": round(preview_ms), "preview_counts": preview["counts"],
        "sync_ms": round(sync_ms), "sync_counts": run["counts"], "sync_duration_ms": run["duration_ms"],
        "noop_sync_ms_median": round(statistics.median(noop), 1), "noop_sync_ms_max": round(max(noop), 1),
        "peak_rss_mib_before_sync": round(rss_before, 1), "peak_rss_mib_after_sync": round(rss_after, 1),
        "members": members["total"], "sample_properties": sample["properties"], "sample_roles": sample["roles"],
    }, indent=2))


if __name__ == "__main__":
    main()
