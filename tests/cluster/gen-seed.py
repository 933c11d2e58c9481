#!/usr/bin/env python3
# Regenerates seed.yaml, a hand-written mirror of sandbox/src/seed/mod.rs (keep them in step).
# Needs PyYAML. Usage: python3 tests/cluster/gen-seed.py
import base64, gzip, json, yaml, os
HERE = os.path.dirname(os.path.abspath(__file__))
M = os.path.join(HERE, "../../sandbox/src/seed/material/")
rd = lambda f: open(M + f).read()
CA, CRT, KEY, DKEY = rd("cluster-ca.crt"), rd("web-tls.crt"), rd("web-tls.key"), rd("deploy-key.pem")
b64 = lambda s: base64.b64encode(s.encode() if isinstance(s, str) else s).decode()
u64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()

class Lit(str): pass
def lit_rep(d, s): return d.represent_scalar("tag:yaml.org,2002:str", s, style="|")
def str_rep(d, s):
    if "\n" in s: return d.represent_scalar("tag:yaml.org,2002:str", s, style="|")
    return d.represent_scalar("tag:yaml.org,2002:str", s)
yaml.add_representer(str, str_rep)

docs = []  # (manager, comment, obj)
def add(obj, manager, note=None): docs.append((manager, note, obj))

ns = lambda n: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
for n in ["dev", "prod"]: add(ns(n), "kubectl-client-side-apply")
root_desc = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."
sa_uids = {}
seen_ns = set()
for i, (n, sa) in enumerate([("default","default"),("kube-system","default"),("kube-system","coredns"),("dev","default"),("dev","web"),("dev","deployer"),("prod","default"),("prod","payments")]):
    add({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": n}}, "kube-controller-manager")
    if n not in seen_ns:
        seen_ns.add(n)
        add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": n, "annotations": {"kubernetes.io/description": root_desc}}, "data": {"ca.crt": CA}}, "kube-controller-manager")

# secrets
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-credentials", "namespace": "dev", "labels": {"app": "web"}}, "type": "Opaque",
     "stringData": {"username": "app", "password": "S3cr3t-Db-P4ssw0rd!", "url": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop"}},
    "kubectl-client-side-apply", "applied with stringData: the last-applied annotation holds the password in plain text")
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-tls", "namespace": "prod", "labels": {"app": "web"}}, "type": "kubernetes.io/tls",
     "data": {"tls.crt": b64(CRT), "tls.key": b64(KEY)}}, "cert-manager-certificates-issuing")
docker = json.dumps({"auths": {"registry.example.com": {"username": "ci-bot", "password": "rg-7Jq2xW9vLp4NzT8c", "auth": b64("ci-bot:rg-7Jq2xW9vLp4NzT8c")}}}, separators=(",", ":"))
for n in ["dev", "prod"]:
    add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred", "namespace": n}, "type": "kubernetes.io/dockerconfigjson",
         "data": {".dockerconfigjson": b64(docker)}}, "kubectl-create")
# a legacy (pre-1.24, non-expiring) service-account token; signature bytes are random, nothing verifies it
deployer_uid = "5d2c8e1a-7b3f-4c9d-a6e2-0f1b2c3d4e5f"
def rnd(n, seed):
    """n deterministic pseudo-random bytes (stand-ins for a signature and key id)."""
    return __import__("hashlib").sha512(seed.encode()).digest() * (n // 64 + 1)
hdr = {"alg": "RS256", "kid": u64(rnd(32, "kid")[:32])}
claims = {"iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": "dev", "kubernetes.io/serviceaccount/secret.name": "deployer-token",
          "kubernetes.io/serviceaccount/service-account.name": "deployer", "kubernetes.io/serviceaccount/service-account.uid": deployer_uid,
          "sub": "system:serviceaccount:dev:deployer"}
tok = ".".join([u64(json.dumps(hdr, separators=(",", ":")).encode()), u64(json.dumps(claims, separators=(",", ":")).encode()), u64(rnd(256, "sig")[:256])])
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "deployer-token", "namespace": "dev",
     "annotations": {"kubernetes.io/service-account.name": "deployer", "kubernetes.io/service-account.uid": deployer_uid}},
     "type": "kubernetes.io/service-account-token", "data": {"token": b64(tok), "ca.crt": b64(CA), "namespace": b64("dev")}}, "kube-controller-manager",
    "a legacy non-expiring token as the token controller wrote them before 1.24 (made up: its signature verifies nowhere)")
values = {"database": {"host": "payments-db.prod.svc", "user": "payments", "password": "H3lm-V4lues-Pa55w0rd"}, "gateway": {"apiKey": "pgw_live_51Hc9sT2eZvKYlo2CkQ8wXr0n"}, "replicaCount": 2}
release = {"name": "payments", "namespace": "prod", "version": 1,
    "info": {"status": "deployed", "description": "Install complete", "first_deployed": "2025-03-02T10:15:04Z", "last_deployed": "2025-03-02T10:15:04Z"},
    "chart": {"metadata": {"name": "payments", "version": "1.4.2", "appVersion": "2.9.0", "apiVersion": "v2", "type": "application"},
              "values": {"replicaCount": 1, "image": {"repository": "registry.example.com/shop/payments"}}},
    "config": values,
    "manifest": "---\n# Source: payments/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: payments\n"}
packed = gzip.compress(json.dumps(release, separators=(",", ":")).encode(), mtime=0)
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sh.helm.release.v1.payments.v1", "namespace": "prod",
     "labels": {"name": "payments", "owner": "helm", "status": "deployed", "version": "1"}}, "type": "helm.sh/release.v1",
     "data": {"release": b64(b64(packed))}}, "helm", "a Helm 3 release: gzipped JSON, base64 by Helm and again as secret data; its values hold credentials")
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "aws-credentials", "namespace": "prod"}, "type": "Opaque",
     "data": {"AWS_ACCESS_KEY_ID": b64("AKIAIOSFODNN7EXAMPLE"), "AWS_SECRET_ACCESS_KEY": b64("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")}}, "kubectl-create",
    "AWS's documented example key pair")
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-credentials", "namespace": "default"}, "type": "kubernetes.io/basic-auth",
     "data": {"username": b64("deploy-bot"), "password": b64("gh-Pa55-for-deploy-bot")}}, "kubectl-create")
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "deploy-ssh-key", "namespace": "default"}, "type": "kubernetes.io/ssh-auth",
     "data": {"ssh-privatekey": b64(DKEY)}}, "kubectl-create")
add({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bootstrap-token-7x2k9q", "namespace": "kube-system"}, "type": "bootstrap.kubernetes.io/token",
     "data": {"token-id": b64("7x2k9q"), "token-secret": b64("m4c8r2t6v0y3b7d1"), "usage-bootstrap-authentication": b64("true"),
              "usage-bootstrap-signing": b64("true"), "auth-extra-groups": b64("system:bootstrappers:kubeadm:default-node-token")}}, "kubeadm")
# config
add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-config", "namespace": "dev", "labels": {"app": "web"}},
     "data": {"DATABASE_URL": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop?sslmode=require", "LOG_LEVEL": "debug", "FEATURE_FLAGS": "checkout-v2,fast-search"}},
    "kubectl-client-side-apply")
add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
     "data": {"Corefile": ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30\n    loop\n    reload\n    loadbalance\n}\n"}},
    "kubeadm")

def deployment(ns_, name, image, replicas, port, sa, env):
    c = {"name": name, "image": image, "ports": [{"containerPort": port, "name": "http"}]}
    if env is not None: c["env"] = env
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns_, "labels": {"app": name}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"serviceAccountName": sa, "containers": [c]}}}}
def pods(dep, hash_, suffixes, rs_uid):
    name = dep["metadata"]["name"]; rs = f"{name}-{hash_}"
    tmpl = dep["spec"]["template"]
    for sfx in suffixes:
        meta = json.loads(json.dumps(tmpl["metadata"]))
        meta = {"name": f"{rs}-{sfx}", "generateName": f"{rs}-", "namespace": dep["metadata"]["namespace"], "labels": dict(meta["labels"], **{"pod-template-hash": hash_}),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": rs_uid, "controller": True, "blockOwnerDeletion": True}]}
        add({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": json.loads(json.dumps(tmpl["spec"]))}, "kube-controller-manager")

web = deployment("dev", "web", "registry.example.com/shop/web:1.8.3", 2, 8080, "web", [
    {"name": "LOG_LEVEL", "value": "debug"},
    {"name": "DATABASE_URL", "value": "postgres://app:S3cr3t-Db-P4ssw0rd!@db.dev.svc.cluster.local:5432/shop"},
    {"name": "API_TOKEN", "value": "sk-dev-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"},
    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}])
add(web, "kubectl-client-side-apply", "applied: the last-applied annotation holds the literal env values")
pods(web, "7d4b9c8f6", ["x2k9p", "q8m4z"], "0b6f1d2e-3c4a-4b5d-8e6f-7a8b9c0d1e2f")
pay = deployment("prod", "payments", "registry.example.com/shop/payments:2.9.0", 2, 8443, "payments", [
    {"name": "PAYMENT_GATEWAY_API_KEY", "value": "pgw_live_51Hc9sT2eZvKYlo2CkQ8wXr0n"},
    {"name": "JWT_SIGNING_SECRET", "value": "b2f7c1e9d4a8f3b6c0e5d9a2f7b1c4e8"},
    {"name": "DB_USER", "value": "payments"},
    {"name": "DB_PASSWORD", "value": "H3lm-V4lues-Pa55w0rd"}])
pay["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
pay["metadata"]["annotations"] = {"meta.helm.sh/release-name": "payments", "meta.helm.sh/release-namespace": "prod"}
add(pay, "helm")
pods(pay, "5f6c7d8b9", ["h7t2r", "n4w6k"], "1c7a2e3f-4d5b-4c6e-9f7a-8b9c0d1e2f3a")
cd = deployment("kube-system", "coredns", "registry.k8s.io/coredns/coredns:v1.12.0", 1, 53, "coredns", None)
cd["metadata"]["labels"] = {"k8s-app": "kube-dns"}
cd["spec"]["selector"] = {"matchLabels": {"k8s-app": "kube-dns"}}
cd["spec"]["template"]["metadata"]["labels"] = {"k8s-app": "kube-dns"}
cd["spec"]["template"]["spec"]["containers"][0]["args"] = ["-conf", "/etc/coredns/Corefile"]
add(cd, "kubeadm")
pods(cd, "668d6bf9bc", ["9xk2m"], "2d8b3f4a-5e6c-4d7f-8a9b-0c1d2e3f4a5b")

for svc in [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
     "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53}, {"name": "metrics", "port": 9153}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "dev", "labels": {"app": "web"}},
     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "payments", "namespace": "prod", "labels": {"app": "payments"}},
     "spec": {"selector": {"app": "payments"}, "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}]:
    add(svc, "kubectl-create")

def event(n, name, kind, obj, typ, reason, msg, comp):
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": n},
            "involvedObject": {"apiVersion": "apps/v1" if kind == "Deployment" else "v1", "kind": kind, "name": obj, "namespace": n},
            "reason": reason, "message": msg, "type": typ, "source": {"component": comp},
            "firstTimestamp": "2025-03-01T09:00:00Z", "lastTimestamp": "2025-03-01T09:00:00Z", "count": 1,
            "reportingComponent": comp, "reportingInstance": ""}
add(event("dev", "web.17f1a2b3c4d5e6f7", "Deployment", "web", "Normal", "ScalingReplicaSet", "Scaled up replica set web-7d4b9c8f6 to 2", "deployment-controller"), "kubelet",
    "events expire after the API server's --event-ttl (1h)")
add(event("dev", "web-pod.17f1a2b3c4d5e700", "Pod", "web", "Normal", "Pulled", "Container image \"registry.example.com/shop/web:1.8.3\" already present on machine", "kubelet"), "kubelet")
add(event("prod", "payments.17f1a2b3c4d5e711", "Pod", "payments", "Warning", "BackOff", "Back-off restarting failed container payments in pod payments", "kubelet"), "kubelet")

rbac = "rbac.authorization.k8s.io/v1"
add({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "deployer", "namespace": "dev"},
     "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch", "update"]},
               {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db-credentials"], "verbs": ["get"]}]},
    "kubectl-client-side-apply", "cluster-admin, view, edit and the cluster-admin binding are the API server's own bootstrap RBAC")
add({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "deployer", "namespace": "dev"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
     "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "dev"}]}, "kubectl-client-side-apply")
add({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "developers-view", "namespace": "prod"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"},
                  {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice@example.com"}]}, "kubectl-client-side-apply")

# beyond the sandbox: a CRD and custom resources
add({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "certificates.cert-manager.io"},
     "spec": {"group": "cert-manager.io", "scope": "Namespaced",
              "names": {"plural": "certificates", "singular": "certificate", "kind": "Certificate", "listKind": "CertificateList", "shortNames": ["cert", "certs"], "categories": ["cert-manager"]},
              "versions": [{"name": "v1", "served": True, "storage": True,
                            "additionalPrinterColumns": [{"name": "Secret", "type": "string", "jsonPath": ".spec.secretName"}, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                            "subresources": {"status": {}},
                            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                "spec": {"type": "object", "required": ["secretName"], "properties": {
                                    "secretName": {"type": "string"}, "commonName": {"type": "string"}, "dnsNames": {"type": "array", "items": {"type": "string"}},
                                    "duration": {"type": "string"}, "renewBefore": {"type": "string"},
                                    "issuerRef": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string"}, "group": {"type": "string"}}}}},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}},
    "kubectl-create", "not in the sandbox's default seed (cli/tests/real_cluster.rs creates it there): a CRD; start.sh waits for it to be Established")
for n, name, sec, dns in [("prod", "web-tls", "web-tls", ["shop.example.com", "www.shop.example.com"]), ("dev", "web-tls", "web-tls-dev", ["dev.shop.example.com"])]:
    add({"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": name, "namespace": n, "labels": {"app": "web"}},
         "spec": {"secretName": sec, "commonName": dns[0], "dnsNames": dns, "duration": "2160h", "renewBefore": "360h",
                  "issuerRef": {"name": "letsencrypt-prod", "kind": "ClusterIssuer", "group": "cert-manager.io"}}}, "kubectl-client-side-apply")

out = ["# The world of the sandbox's default seed (sandbox/src/seed/mod.rs), for a real API server.",
       "# Generated once from that file and sandbox/src/seed/material/ (all credentials are made up",
       "# or documented examples). start.sh creates these documents in order: `# manager: NAME` says",
       "# which field manager (kubectl create --field-manager NAME); kubectl-client-side-apply means",
       "# `kubectl apply`, which keeps the last-applied annotation as the sandbox does.",
       "# Differences from the sandbox are listed in README.md."]
for m, note, o in docs:
    out.append("---")
    if note: out.append(f"# {note}")
    out.append(f"# manager: {m}")
    out.append(yaml.dump(o, sort_keys=False, width=1000, default_flow_style=False).rstrip("\n"))
open(os.path.join(HERE, "seed.yaml"), "w").write("\n".join(out) + "\n")
print(len(docs))
