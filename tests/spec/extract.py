"""Extracts the subset of Persona's bundled OpenAPI spec (2025-12-08) that the simulator serves.

Run from this folder: python3 extract.py /path/to/persona-openapi/2025-12-08/openapi-bundled.yaml
Writes persona-openapi-2025-12-08.subset.json: the chosen operations and inquiry webhooks, plus
every `#/components/...` object they reference (transitively). Media-type `examples` are dropped
(they only point at example payloads); everything else is copied unchanged.
"""
import json
import sys

import yaml

OPERATIONS = {
    "/inquiries": ["get", "post"],
    "/inquiries/{inquiry-id}": ["get"],
    "/inquiries/search": ["post"],
    "/inquiries/{inquiry-id}/resume": ["post"],
    "/inquiries/{inquiry-id}/expire": ["post"],
    "/inquiries/{inquiry-id}/generate-one-time-link": ["post"],
    "/inquiry-templates/{inquiry-template-id}": ["get"],
    "/rate-limits": ["get"],
}
WEBHOOKS = [
    "inquiry.created", "inquiry.started", "inquiry.expired", "inquiry.completed",
    "inquiry.failed", "inquiry.marked-for-review", "inquiry.approved", "inquiry.declined",
]


def drop_examples(node):
    if isinstance(node, dict):
        return {k: drop_examples(v) for k, v in node.items()
                if not (k == "examples" and isinstance(v, dict)
                        and all(isinstance(e, dict) and ("$ref" in e or "value" in e)
                                for e in v.values()))}
    if isinstance(node, list):
        return [drop_examples(v) for v in node]
    return node


def main(src):
    spec = yaml.safe_load(open(src))
    out = {"openapi": spec["openapi"], "info": spec["info"], "paths": {}, "webhooks": {},
           "components": {}}
    for path, methods in OPERATIONS.items():
        out["paths"][path] = {m: drop_examples(spec["paths"][path][m]) for m in methods}
    for name in WEBHOOKS:
        out["webhooks"][name] = drop_examples(spec["webhooks"][name])

    seen = set()

    def resolve(ref):
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref" and isinstance(v, str) and v.startswith("#/components/"):
                    if v not in seen:
                        seen.add(v)
                        _, _, kind, name = v.split("/", 3)
                        target = drop_examples(resolve(v))
                        out["components"].setdefault(kind, {})[name] = target
                        walk(target)
                elif k == "mapping" and isinstance(v, dict):
                    walk({"_": [{"$ref": r} for r in v.values()]})
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out["paths"])
    walk(out["webhooks"])
    for kind in out["components"]:
        out["components"][kind] = dict(sorted(out["components"][kind].items()))
    with open("persona-openapi-2025-12-08.subset.json", "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
