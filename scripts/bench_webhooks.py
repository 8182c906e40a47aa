#!/usr/bin/env python3
"""The event feed and webhook delivery at scale against a running rollcall
(BENCHMARKS.md).

Creates --users users (Bulk, 1,000 per request); pauses the tenant's two
webhook endpoints (made beforehand: one a message per event, one in
batches of up to 100). Synchronizes (--users joins, each a feed event), then times:
  * reading the whole feed by paging (GET /api/v1/events?limit=1000);
  * each endpoint resumed alone until its delivery cursor reaches the feed's
    newest cursor (the receiver verifies every signature).
Python standard library only; one keep-alive connection.
"""

import argparse
import http.client
import json
import time
import urllib.parse

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


class Client:
    def __init__(self, base_url, token):
        url = urllib.parse.urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=900)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        self.connection.request(method, path, body=data, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {text[:500]!r}")
        return json.loads(text) if text else None


def populate(scim, users):
    for start in range(0, users, 1000):
        operations = [
            {"method": "POST", "path": "/Users", "bulkId": f"u{i}",
             "data": {"schemas": [USER], "userName": f"user{i:06d}@example.com",
                      "externalId": f"ext{i}",
                      "emails": [{"value": f"user{i:06d}@example.com", "primary": True}]}}
            for i in range(start, min(start + 1000, users))
        ]
        scim.send("POST", "/scim/v2/Bulk", {"schemas": [BULK], "Operations": operations})


def wait_delivered(admin, webhook_id, cursor, started):
    while True:
        shown = admin.send("GET", f"/api/v1/webhooks/{webhook_id}")
        delivery = shown.get("delivery") or {}
        if delivery.get("cursor") == cursor:
            return time.perf_counter() - started, delivery.get("delivered")
        if shown["status"] != "active":
            raise SystemExit(f"endpoint {webhook_id} is {shown['status']}: {shown}")
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--scim-token", required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--receiver-url", required=True)
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    scim = Client(args.base_url, args.scim_token)
    admin = Client(args.base_url, args.admin_token)

    started = time.perf_counter()
    populate(scim, args.users)
    print(f"populated {args.users} users in {time.perf_counter() - started:.1f} s")
    # The endpoints were made by scripts/bench-webhooks.sh (the receiver
    # needs their secrets); both wait, paused, until their turn.
    endpoints = {}
    for endpoint in admin.send("GET", "/api/v1/webhooks")["webhooks"]:
        admin.send("PATCH", f"/api/v1/webhooks/{endpoint['id']}", {"status": "paused"})
        endpoints[endpoint["description"]] = endpoint["id"]
    started = time.perf_counter()
    run = admin.send("POST", "/api/v1/provisioning/sync")
    print(f"synchronize: {run['counts']['join']} joins in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    after, events, pages = None, 0, 0
    while True:
        query = "limit=1000" + (f"&after={after}" if after else "")
        page = admin.send("GET", f"/api/v1/events?{query}")
        events += len(page["events"])
        pages += 1
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    paging = time.perf_counter() - started
    print(f"feed: {events} events in {pages} pages, {paging:.2f} s (target <= 2 s)")

    results = {"events": events, "paging_s": round(paging, 3)}
    for name, webhook_id in endpoints.items():
        started = time.perf_counter()
        admin.send("PATCH", f"/api/v1/webhooks/{webhook_id}", {"status": "active"})
        seconds, messages = wait_delivered(admin, webhook_id, after, started)
        admin.send("PATCH", f"/api/v1/webhooks/{webhook_id}", {"status": "paused"})
        print(f"delivery, {name}: {events} events in {messages} requests, {seconds:.2f} s, "
              f"{events / seconds:,.0f} events/s")
        results[name] = {"seconds": round(seconds, 3), "requests": messages,
                         "events_per_s": round(events / seconds)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
