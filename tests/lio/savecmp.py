#!/usr/bin/env python3
"""Compare two saveconfig.json files modulo key order (issue 23 item 6).

Usage: savecmp.py A.json B.json
Exit 0 when equal; else prints the path of the first difference and exits 1.

Lists whose order carries no meaning are compared sorted by their identity:
rtslib-fb lists objects in configfs readdir order, rustio sorted, so only the
identity keys below decide which element is compared with which. Values are
compared exactly (type included: 1 != "1", null != missing).
"""
import json
import sys

# list name -> identity keys of its elements
IDENTITY = {
    "fabric_modules": ("name",),
    "storage_objects": ("plugin", "name"),
    "alua_tpgs": ("name",),
    "targets": ("fabric", "wwn"),
    "tpgs": ("tag",),
    "luns": ("index",),
    "portals": ("ip_address", "port"),
    "node_acls": ("node_wwn",),
    "mapped_luns": ("index",),
}

MISSING = "<missing>"


def ident(keys, elem):
    if isinstance(elem, dict):
        return "/".join(str(elem.get(k)) for k in keys)
    return json.dumps(elem, sort_keys=True)


def first_diff(a, b, path):
    """The first difference between a and b as 'path: a != b', or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else k
            if k not in a or k not in b:
                return f"{sub}: {json.dumps(a.get(k, MISSING))} != {json.dumps(b.get(k, MISSING))}"
            d = first_list(k, a[k], b[k], sub) if k in IDENTITY else first_diff(a[k], b[k], sub)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        return first_list(None, a, b, path)
    if type(a) is not type(b) or a != b:
        return f"{path}: {json.dumps(a)} != {json.dumps(b)}"
    return None


def first_list(name, a, b, path):
    if not (isinstance(a, list) and isinstance(b, list)):
        return first_diff(a, b, path) if name is None else (
            f"{path}: {json.dumps(a)} != {json.dumps(b)}" if a != b else None)
    keys = IDENTITY.get(name)
    if keys:
        ma = {ident(keys, e): e for e in a}
        mb = {ident(keys, e): e for e in b}
        if len(ma) != len(a) or len(mb) != len(b):
            return f"{path}: duplicate identities"
        for i in sorted(set(ma) | set(mb)):
            sub = f"{path}[{i}]"
            if i not in ma or i not in mb:
                return f"{sub}: {'present' if i in ma else MISSING} != {'present' if i in mb else MISSING}"
            d = first_diff(ma[i], mb[i], sub)
            if d:
                return d
        return None
    if len(a) != len(b):
        return f"{path}: {len(a)} elements != {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        d = first_diff(x, y, f"{path}[{i}]")
        if d:
            return d
    return None


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(sys.argv[1]) as fa, open(sys.argv[2]) as fb:
        a, b = json.load(fa), json.load(fb)
    d = first_diff(a, b, "")
    if d:
        print(f"first difference ({sys.argv[1]} vs {sys.argv[2]}): {d}")
        return 1
    print(f"{sys.argv[1]} == {sys.argv[2]} (modulo key order)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
