#!/usr/bin/env python3
"""Times management API writes and reads against one running node (loopback only).

    python3 scripts/control-api-bench.py http://127.0.0.1:8080 "$(cat DATA_DIR/bootstrap-key)" --count 300

Raises the default org's rate limit (root key), creates COUNT ACL rules, reads each back, deletes
them, and prints the mean time per create and per read. Run it against a node on SQLite and one
on PostgreSQL (`--store`) side by side to compare the two stores.
"""
import argparse
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the node's HTTP base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("key", help="the root API key")
    parser.add_argument("--count", type=int, default=300, help="rules to create (default 300)")
    args = parser.parse_args()
    if not args.base.startswith(("http://127.", "http://[::1]", "http://localhost")):
        parser.error("load tests only talk to loopback")
    with httpx.Client(base_url=args.base, headers={"Authorization": f"Bearer {args.key}"}, timeout=10) as c:
        r = c.patch("/v1/orgs/default", json={"settings": {"rate_limit_per_sec": 1_000_000, "rate_burst": 1_000_000}})
        r.raise_for_status()
        time.sleep(1.0)  # the new limits reach the buckets with the next snapshot
        ids = []
        start = time.perf_counter()
        for i in range(args.count):
            r = c.post("/v1/acl/rules", json={"topic": f"bench/{i}/#", "action": "subscribe", "permission": "allow"})
            r.raise_for_status()
            ids.append(r.json()["id"])
        create = (time.perf_counter() - start) / args.count
        start = time.perf_counter()
        for rule in ids:
            c.get(f"/v1/acl/rules/{rule}").raise_for_status()
        read = (time.perf_counter() - start) / args.count
        for rule in ids:
            c.delete(f"/v1/acl/rules/{rule}").raise_for_status()
    print(f"{args.base}: create {create * 1e3:.2f} ms, read {read * 1e3:.2f} ms per request (n={args.count})")


if __name__ == "__main__":
    main()
