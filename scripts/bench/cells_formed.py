#!/usr/bin/env python3
"""How many agents of a cluster.sh run see the cluster of cells formed.

Usage: cells_formed.py PORTS_FILE N K. PORTS_FILE has one line per agent,
its HTTP port third. An agent sees it formed when its own cell's row has
as many live members as agents say they are in that cell, it knows K
cells, and their live members add up to N. Prints the count."""
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def get(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/cells", timeout=5) as r:
            return json.load(r)
    except Exception:
        return None


def main():
    ports = [line.split()[2] for line in open(sys.argv[1]) if line.strip()]
    n, k = int(sys.argv[2]), int(sys.argv[3])
    with ThreadPoolExecutor(16) as ex:
        views = list(ex.map(get, ports))
    size = {}
    for v in views:
        if v and v.get("cell"):
            size[v["cell"]] = size.get(v["cell"], 0) + 1
    ok = 0
    for v in views:
        if not v or not v.get("cell") or not v.get("cells"):
            continue
        rows = v["cells"]
        if rows[0]["alive"] == size[v["cell"]] and len(rows) == k and sum(r["alive"] for r in rows) == n:
            ok += 1
    print(ok)


main()
