#!/usr/bin/env python3
"""Regenerate schemas.json.gz: the OpenAPI v3 component schemas the sandbox serves.

Fetches /openapi/v3/<group-version> from a real kube-apiserver (tests/cluster: `source DIR/env`
first, for KUBELEASH_CLUSTER_SERVER, KUBELEASH_CLUSTER_CA and KUBELEASH_CLUSTER_ADMIN_TOKEN) and
keeps, for the kinds below, their schemas and every schema they reference, descriptions and the
x-kubernetes-* patch extensions included. Run: python3 sandbox/src/openapi/trim.py
"""
import gzip
import json
import os
import ssl
import urllib.request

KINDS = {
    "api/v1": ["ConfigMap", "Event", "Namespace", "Pod", "Secret", "ServiceAccount", "Service"],
    "apis/apps/v1": ["Deployment"],
    "apis/rbac.authorization.k8s.io/v1": ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"],
    "apis/apiextensions.k8s.io/v1": ["CustomResourceDefinition"],
    "apis/authorization.k8s.io/v1": [
        "LocalSubjectAccessReview", "SelfSubjectAccessReview", "SelfSubjectRulesReview",
        "SubjectAccessReview",
    ],
}


def fetch(path):
    ctx = ssl.create_default_context(cafile=os.environ["KUBELEASH_CLUSTER_CA"])
    req = urllib.request.Request(
        os.environ["KUBELEASH_CLUSTER_SERVER"] + "/openapi/v3/" + path,
        headers={"Authorization": "Bearer " + os.environ["KUBELEASH_CLUSTER_ADMIN_TOKEN"]},
    )
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.load(r)


def refs(x, out):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "$ref" and isinstance(v, str):
                out.append(v.rsplit("/", 1)[-1])
            else:
                refs(v, out)
    elif isinstance(x, list):
        for v in x:
            refs(v, out)


pool = {}
for gv, kinds in KINDS.items():
    schemas = fetch(gv)["components"]["schemas"]
    stack = [
        n for n, s in schemas.items()
        if any(g.get("kind") in kinds for g in s.get("x-kubernetes-group-version-kind", []))
        and not n.endswith("List")
    ]
    while stack:
        n = stack.pop()
        if n in pool:
            continue
        pool[n] = schemas[n]
        refs(schemas[n], stack)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas.json.gz")
data = json.dumps(pool, separators=(",", ":"), sort_keys=True).encode()
with open(out, "wb") as f:
    f.write(gzip.compress(data, 9, mtime=0))
print(f"{len(pool)} schemas, {len(data)} bytes, written to {out}")
