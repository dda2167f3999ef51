#!/usr/bin/env python3
"""Trims Atlassian's OpenAPI documents to the webhook parts the tests read.

Usage: hack/trim-specs.py SOURCE_DIR testdata/specs

Keeps the operations whose path the conformance tests call or enumerate, every schema,
parameter and response they reference (followed transitively), the security schemes and
the document's identity (info, servers, x-revision). Everything else is dropped so the
repository carries a few hundred kilobytes instead of four megabytes. The output is
deterministic (sorted keys), so re-running it on the same sources changes nothing.
"""

import json
import re
import sys
from pathlib import Path

# (source file, output file, predicate over the path template)
KEEP = [
    (
        "bitbucket-cloud-2.0.swagger.v3.json",
        "bitbucket-cloud-2.0.webhooks.json",
        lambda p: "hook" in p or p in ("/user", "/repositories/{workspace}"),
    ),
    (
        "bitbucket-datacenter-9.4.openapi.json",
        "bitbucket-datacenter-9.4.webhooks.json",
        lambda p: "/webhooks" in p
        or p
        in (
            "/api/latest/projects",
            "/api/latest/projects/{projectKey}/repos",
            "/api/latest/projects/{projectKey}/repos/{repositorySlug}",
        ),
    ),
]

REF = re.compile(r"^#/components/([^/]+)/(.+)$")


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def trim(doc, keep_path):
    paths = {p: item for p, item in doc["paths"].items() if keep_path(p)}
    components = doc.get("components", {})
    kept = {"securitySchemes": components.get("securitySchemes", {})}
    todo = list(refs(paths))
    seen = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        m = REF.match(ref)
        if not m:
            raise SystemExit(f"unsupported $ref {ref}")
        kind, name = m.groups()
        target = components[kind][name]
        kept.setdefault(kind, {})[name] = target
        todo.extend(refs(target))
    out = {k: doc[k] for k in ("openapi", "info", "servers", "x-revision") if k in doc}
    out["paths"] = paths
    out["components"] = kept
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    source, dest = Path(sys.argv[1]), Path(sys.argv[2])
    dest.mkdir(parents=True, exist_ok=True)
    for src, out, keep_path in KEEP:
        doc = json.loads((source / src).read_text())
        trimmed = trim(doc, keep_path)
        (dest / out).write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
        print(f"{out}: {len(trimmed['paths'])} paths", file=sys.stderr)


if __name__ == "__main__":
    main()
