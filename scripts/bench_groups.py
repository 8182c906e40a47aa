#!/usr/bin/env python3
"""Large groups and deep pages against a running rollcall (BENCHMARKS.md).

Creates --users users (8 at a time), then times, with one keep-alive
connection and the median of --repeat runs where a step repeats:
  * PATCH adding 10,000 members to an empty group (Entra's shape), ten times,
    up to a 100,000-member group;
  * PATCH adding 1 member to it, and removing 1 (filter and Entra's older
    value-list dialect);
  * GET /Groups/{id}?excludedAttributes=members on it;
  * GET /Users?startIndex=<users-9999>&count=100.
Python standard library only.
"""

import argparse
import http.client
import json
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Client:
    def __init__(self, base_url, token):
        url = urllib.parse.urlsplit(base_url)
        self.prefix = url.path.rstrip("/")
        self.connection = http.client.HTTPConnection(url.hostname, url.port)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}

    def send(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        started = time.perf_counter()
        self.connection.request(method, self.prefix + path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {text[:300]!r}")
        return elapsed_ms, (json.loads(text) if text else None)


def create_users(args):
    def create(batch):
        client = Client(args.base_url, args.token)
        ids = []
        for i in batch:
            _, body = client.send("POST", "/Users", {"userName": f"member{i}@example.com", "active": True})
            ids.append(body["id"])
        return ids

    batches = [range(start, min(start + 1000, args.users)) for start in range(0, args.users, 1000)]
    ids = []
    with ThreadPoolExecutor(8) as pool:
        for chunk in pool.map(create, batches):
            ids.extend(chunk)
    return ids


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    started = time.perf_counter()
    ids = create_users(args)
    print(f"created {len(ids)} users in {time.perf_counter() - started:.0f} s")
    client = Client(args.base_url, args.token)
    _, group = client.send("POST", "/Groups", {"displayName": "Everyone"})
    group_path = f"/Groups/{group['id']}"

    def patch(operations):
        return client.send("PATCH", group_path, {"schemas": [PATCH_OP], "Operations": operations})[0]

    adds = []
    for start in range(0, len(ids), 10_000):
        chunk = ids[start:start + 10_000]
        value = [{"$ref": None, "value": member} for member in chunk]
        adds.append(patch([{"op": "Add", "path": "members", "value": value}]))
    print(f"PATCH adding 10,000 members, {len(adds)} times (group grows to {len(ids)}): "
          f"first {adds[0]:.0f} ms, median {statistics.median(adds):.0f} ms, max {max(adds):.0f} ms")

    # Real users outside the group: ids that exist, as an IdP sends them (an
    # unknown id is kept as a dangling reference, a different path).
    outsiders = [client.send("POST", "/Users", {"userName": f"outsider{i}@example.com", "active": True})[1]["id"]
                 for i in range(args.repeat)]
    one_add = [patch([{"op": "Add", "path": "members", "value": [{"value": who}]}]) for who in outsiders]
    by_filter = [patch([{"op": "remove", "path": f'members[value eq "{who}"]'}]) for who in outsiders]
    print(f"PATCH adding 1 member to the {len(ids)}-member group: median {statistics.median(one_add):.1f} ms")
    print(f"PATCH removing 1 member (filter): median {statistics.median(by_filter):.1f} ms")
    for who in outsiders:
        patch([{"op": "Add", "path": "members", "value": [{"value": who}]}])
    by_list = [patch([{"op": "Remove", "path": "members", "value": [{"value": who}]}]) for who in outsiders]
    print(f"PATCH removing 1 member (value list): median {statistics.median(by_list):.1f} ms")

    excluded = [client.send("GET", f"{group_path}?excludedAttributes=members")[0] for _ in range(args.repeat)]
    print(f"GET group ?excludedAttributes=members: median {statistics.median(excluded):.1f} ms")
    start_index = max(1, len(ids) - 9_999)
    deep = [client.send("GET", f"/Users?startIndex={start_index}&count=100")[0] for _ in range(args.repeat)]
    print(f"GET /Users?startIndex={start_index}&count=100: median {statistics.median(deep):.1f} ms")


if __name__ == "__main__":
    main()
