#!/usr/bin/env python3
"""Writes the mask corpus inputs (inputs/*) and cases.json.

The inputs are Kubernetes API responses as the API server serializes them: compact JSON from
Go's encoding/json (struct fields in declaration order, map keys sorted, `<`, `>`, `&`, U+2028 and
U+2029 escaped as `\\u003c` etc., a trailing newline from json.Encoder), watch events one per line,
Tables, PartialObjectMetadata, logs as text. The last-applied annotation is what client-side
`kubectl apply` writes: the manifest marshalled with sorted keys plus a newline.

Every credential below is fake, made for this corpus. The expected outputs (expected/*) are not
written here: they were produced by running the masker, then checked by hand; `knownBug` cases
hold the correct output, not the masker's.

Run from anywhere: python3 tests/testdata/mask/make_inputs.py
"""

import base64
import gzip
import io
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
R = random.Random(20240611)

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
B64 = ALNUM + "+/"


def rnd(n, alphabet=ALNUM):
    return "".join(R.choice(alphabet) for _ in range(n))


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def b64url(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.urlsafe_b64encode(s).decode().rstrip("=")


def go(obj, sort=False):
    """Go encoding/json output for obj (insertion order = Go field order; maps pre-sorted)."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort)
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def doc(obj):
    """A whole response body: json.Encoder.Encode adds a newline."""
    return go(obj) + "\n"


def sorted_map(d):
    return {k: d[k] for k in sorted(d)}


def last_applied(manifest):
    """What client-side kubectl apply stores: sorted keys, HTML-escaped, newline."""
    return go(manifest, sort=True) + "\n"


def pem(label, lines=12):
    body = "\n".join(rnd(64, B64) for _ in range(lines)) + "\n" + rnd(24, B64) + "=="
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def jwt(payload):
    header = {"alg": "RS256", "kid": "Jx3pQ0bFz8cY2w9KhMtR5vLs7NdAeGu1iOoP4qWxYZk"}
    sig = rnd(342, ALNUM + "-_")
    return f"{b64url(go(header))}.{b64url(go(payload))}.{sig}"


def uuid4():
    h = "0123456789abcdef"
    return f"{rnd(8, h)}-{rnd(4, h)}-4{rnd(3, h)}-{R.choice('89ab')}{rnd(3, h)}-{rnd(12, h)}"


def meta(name, namespace="dev", uid=None, rv=None, created="2024-05-02T09:14:27Z", labels=None,
         annotations=None, owner=None, managed=None, generation=None):
    m = {"name": name}
    if namespace:
        m["namespace"] = namespace
    m["uid"] = uid or uuid4()
    m["resourceVersion"] = rv or str(R.randint(100000, 999999))
    if generation is not None:
        m["generation"] = generation
    m["creationTimestamp"] = created
    if labels:
        m["labels"] = sorted_map(labels)
    if annotations:
        m["annotations"] = sorted_map(annotations)
    if owner:
        m["ownerReferences"] = owner
    if managed:
        m["managedFields"] = managed
    return m


def mf(manager, op, api, fields, time="2024-05-02T09:14:27Z"):
    return {"manager": manager, "operation": op, "apiVersion": api, "time": time, "fieldsType": "FieldsV1",
            "fieldsV1": fields}


def secret_fields(keys, extra=None):
    f = {"f:data": {".": {}, **{f"f:{k}": {} for k in sorted(keys)}}, "f:type": {}}
    if extra:
        f.update(extra)
    return f


def secret(name, typ, data, ns="dev", with_kind=True, labels=None, annotations=None, managed=True,
           manager="kubectl-create", rv=None, created="2024-05-02T09:14:27Z"):
    o = {}
    if with_kind:
        o["kind"] = "Secret"
        o["apiVersion"] = "v1"
    mfs = [mf(manager, "Update", "v1", secret_fields(data.keys()), created)] if managed else None
    o["metadata"] = meta(name, ns, labels=labels, annotations=annotations, managed=mfs, rv=rv, created=created)
    o["data"] = sorted_map({k: b64(v) for k, v in data.items()})
    o["type"] = typ
    return o


# --------------------------------------------------------------------------------------------
# Credentials used across cases. `SECRETS[name]` is the plain value that must never be output.

DB_PASSWORD = "Zt7#qLp2!vRx9sWm"
DB_USER = "orders_app_rw"
API_KEY = "sk_live_" + rnd(32)
GH_PAT = "ghp_" + rnd(36)
SLACK = "xoxb-" + str(R.randint(10**11, 10**12 - 1)) + "-" + str(R.randint(10**12, 10**13 - 1)) + "-" + rnd(24)
AWS_ID = "AKIA" + rnd(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
AWS_SECRET = rnd(40, ALNUM + "/+")
SA_JWT = jwt({"aud": ["https://kubernetes.default.svc.cluster.local"], "exp": 1746177267, "iat": 1714641267,
              "iss": "https://kubernetes.default.svc.cluster.local",
              "kubernetes.io": {"namespace": "dev", "serviceaccount": {"name": "deployer", "uid": "1f0c1bd2-8d1e-4a4b-9b0e-3c6f7f1e2a90"}},
              "nbf": 1714641267, "sub": "system:serviceaccount:dev:deployer"})
LEGACY_SA_JWT = jwt({"iss": "kubernetes/serviceaccount", "kubernetes.io/serviceaccount/namespace": "dev",
                     "kubernetes.io/serviceaccount/secret.name": "builder-token",
                     "kubernetes.io/serviceaccount/service-account.name": "builder",
                     "kubernetes.io/serviceaccount/service-account.uid": "7a1f9e0c-2b44-4d0e-9c1f-5e8d2a3b4c6d",
                     "sub": "system:serviceaccount:dev:builder"})
TLS_KEY = pem("RSA PRIVATE KEY", 25)
TLS_CERT = pem("CERTIFICATE", 18)
EC_KEY = pem("EC PRIVATE KEY", 3)
SSH_KEY = pem("OPENSSH PRIVATE KEY", 6)
CA_CRT = pem("CERTIFICATE", 14)
CLIENT_KEY = pem("RSA PRIVATE KEY", 20)
CLIENT_KEY_DATA = b64(CLIENT_KEY)
KUBE_TOKEN = "kubeadm-" + rnd(6, "abcdefghijklmnopqrstuvwxyz0123456789") + "." + rnd(16, "abcdefghijklmnopqrstuvwxyz0123456789")
REG_PASSWORD = "dckr_pat_" + rnd(27, ALNUM + "-_")
BASIC_PASSWORD = "correct horse battery staple & <friends>"
BOOT_SECRET = rnd(16, "abcdefghijklmnopqrstuvwxyz0123456789")
HELM_PG_PASSWORD = "helm-pg-" + rnd(20)
STRINGDATA_PW = "s3cr3t \"quoted\" <html> & more"
ARGO_BEARER = rnd(64, ALNUM)
REDIS_URL_PW = "r3d1s-" + rnd(18)
JWT_SIGNING = rnd(48, ALNUM)
VALUE_FIRST_TOKEN = "vf-" + rnd(30)
GO_ESC_SECRET = "pa<ss>&word" + rnd(6)
SMTP_PASSWORD = "smtp-" + rnd(20)
WEBHOOK_SECRET = "whsec_" + rnd(32)

cases = []


def write(name, text):
    path = os.path.join(HERE, "inputs", name)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return "inputs/" + name


KUBECTL_UA = "kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"
JSON_ACCEPT = [["Accept", "application/json"], ["User-Agent", KUBECTL_UA]]
TABLE_ACCEPT = [["Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"],
                ["User-Agent", KUBECTL_UA]]
POM_ACCEPT = [["Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"],
              ["User-Agent", "kube-controller-manager/v1.33.1 (linux/amd64) kubernetes/8adc0f0/metadata-informers"]]


def case(cid, text, secrets, method="GET", target="", headers=None, ct="application/json", policy="default.yaml",
         ext="json", ce=None, note=None, known_bug=None, detectors=False, error=None):
    c = {"id": cid, "policy": policy, "method": method, "target": target,
         "headers": headers if headers is not None else JSON_ACCEPT, "contentType": ct}
    if ce:
        c["contentEncoding"] = ce
    c["input"] = write(f"{cid}.{ext}", text)
    c["expected"] = f"expected/{cid}.{ext}"
    c["secrets"] = secrets
    if error:
        c["expectedError"] = error
    if detectors:
        c["needsDetectors"] = True
    if known_bug:
        c["knownBug"] = known_bug
    if note:
        c["note"] = note
    cases.append(c)


# --------------------------------------------------------------------------------------------
# Secrets of every type

opaque = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD, "api-key": API_KEY},
                labels={"app.kubernetes.io/name": "orders", "app.kubernetes.io/part-of": "shop"})
case("secret-opaque", doc(opaque), [DB_PASSWORD, DB_USER, API_KEY], target="/api/v1/namespaces/dev/secrets/orders-db")

tls = secret("shop-tls", "kubernetes.io/tls", {"tls.crt": TLS_CERT, "tls.key": TLS_KEY},
             annotations={"cert-manager.io/alt-names": "shop.example.com,www.shop.example.com",
                          "cert-manager.io/certificate-name": "shop-tls", "cert-manager.io/common-name": "shop.example.com",
                          "cert-manager.io/issuer-kind": "ClusterIssuer", "cert-manager.io/issuer-name": "letsencrypt-prod"},
             labels={"controller.cert-manager.io/fao": "true"}, manager="cert-manager-certificates-issuing")
case("secret-tls", doc(tls), [TLS_KEY, TLS_CERT], target="/api/v1/namespaces/dev/secrets/shop-tls")

dockerconfig = go({"auths": {"registry.example.com": {"username": "robot$ci", "password": REG_PASSWORD,
                                                      "auth": b64("robot$ci:" + REG_PASSWORD)}}})
dcj = secret("regcred", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": dockerconfig})
case("secret-dockerconfigjson", doc(dcj), [dockerconfig], target="/api/v1/namespaces/dev/secrets/regcred",
     note="the registry password is inside the base64 of .dockerconfigjson")

dockercfg = go({"registry.example.com": {"username": "legacy", "password": REG_PASSWORD + "-old",
                                         "email": "ci@example.com", "auth": b64("legacy:" + REG_PASSWORD + "-old")}})
dc = secret("regcred-legacy", "kubernetes.io/dockercfg", {".dockercfg": dockercfg})
case("secret-dockercfg", doc(dc), [dockercfg], target="/api/v1/namespaces/dev/secrets/regcred-legacy")

sat = secret("builder-token", "kubernetes.io/service-account-token",
             {"ca.crt": CA_CRT, "namespace": "dev", "token": LEGACY_SA_JWT},
             annotations={"kubernetes.io/service-account.name": "builder",
                          "kubernetes.io/service-account.uid": "7a1f9e0c-2b44-4d0e-9c1f-5e8d2a3b4c6d"},
             manager="kube-controller-manager")
case("secret-service-account-token", doc(sat), [LEGACY_SA_JWT, CA_CRT], target="/api/v1/namespaces/dev/secrets/builder-token")

basic = secret("git-basic", "kubernetes.io/basic-auth", {"username": "git-deployer", "password": BASIC_PASSWORD},
               annotations={"tekton.dev/git-0": "https://github.com"})
case("secret-basic-auth", doc(basic), [BASIC_PASSWORD], target="/api/v1/namespaces/dev/secrets/git-basic")

ssh = secret("git-ssh", "kubernetes.io/ssh-auth", {"ssh-privatekey": SSH_KEY, "known_hosts": "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"})
case("secret-ssh-auth", doc(ssh), [SSH_KEY], target="/api/v1/namespaces/dev/secrets/git-ssh")

tid = "k3x9qz"
boot = secret(f"bootstrap-token-{tid}", "bootstrap.kubernetes.io/token",
              {"auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token", "description": "kubeadm join token",
               "expiration": "2024-05-03T09:14:27Z", "token-id": tid, "token-secret": BOOT_SECRET,
               "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true"}, ns="kube-system", manager="kubeadm")
case("secret-bootstrap-token", doc(boot), [BOOT_SECRET],
     target="/api/v1/namespaces/kube-system/secrets/bootstrap-token-k3x9qz")

helm_release = {"name": "orders-db", "info": {"status": "deployed", "description": "Install complete"},
                "chart": {"metadata": {"name": "postgresql", "version": "15.5.0"}},
                "config": {"auth": {"postgresPassword": HELM_PG_PASSWORD, "database": "orders"}},
                "manifest": "---\n# Source: postgresql/templates/secrets.yaml\napiVersion: v1\nkind: Secret\n",
                "version": 3, "namespace": "dev"}
buf = io.BytesIO()
with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
    gz.write(go(helm_release).encode())
HELM_BLOB = b64(buf.getvalue())  # helm base64s the gzip; Kubernetes base64s that again
helm = secret("sh.helm.release.v1.orders-db.v3", "helm.sh/release.v1", {"release": HELM_BLOB},
              labels={"modifiedAt": "1714641267", "name": "orders-db", "owner": "helm", "status": "deployed", "version": "3"},
              manager="helm")
case("secret-helm-release", doc(helm), [HELM_BLOB], target="/api/v1/namespaces/dev/secrets/sh.helm.release.v1.orders-db.v3",
     note="data.release is base64(helm base64(gzip(release JSON with chart values)))")

kubeconfig = f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {b64(CA_CRT)}
    server: https://prod-apiserver.example.com:6443
  name: prod
contexts:
- context:
    cluster: prod
    user: prod-admin
  name: prod-admin@prod
current-context: prod-admin@prod
kind: Config
preferences: {{}}
users:
- name: prod-admin
  user:
    client-certificate-data: {b64(TLS_CERT)}
    client-key-data: {CLIENT_KEY_DATA}
"""
capi = secret("prod-kubeconfig", "cluster.x-k8s.io/secret", {"value": kubeconfig}, ns="capi-clusters",
              labels={"cluster.x-k8s.io/cluster-name": "prod"}, manager="manager",
              )
capi["metadata"]["ownerReferences"] = [{"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlane",
                                        "name": "prod-control-plane", "uid": "0b8e3f4c-7e2a-4a6b-8a55-0c3b9d1e2f47",
                                        "controller": True, "blockOwnerDeletion": True}]
# ownerReferences comes before managedFields in ObjectMeta
capi["metadata"] = {k: capi["metadata"][k] for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp",
                                                      "labels", "ownerReferences", "managedFields"]}
case("secret-capi-kubeconfig", doc(capi), [kubeconfig],
     target="/api/v1/namespaces/capi-clusters/secrets/prod-kubeconfig")

argo_config = go({"bearerToken": ARGO_BEARER, "tlsClientConfig": {"insecure": False, "caData": b64(CA_CRT)}})
argo = secret("cluster-prod", "Opaque", {"config": argo_config, "name": "prod", "server": "https://prod-apiserver.example.com:6443"},
              ns="argocd", labels={"argocd.argoproj.io/secret-type": "cluster"}, manager="argocd-server")
case("secret-argocd-cluster", doc(argo), [argo_config], target="/api/v1/namespaces/argocd/secrets/cluster-prod")

immutable = secret("jwt-signing", "Opaque", {"signing-key": JWT_SIGNING})
immutable = {k: immutable[k] for k in ["kind", "apiVersion", "metadata"]} | {"immutable": True, "data": immutable["data"], "type": "Opaque"}
case("secret-immutable", doc(immutable), [JWT_SIGNING], target="/api/v1/namespaces/dev/secrets/jwt-signing")

empty_data = {"kind": "Secret", "apiVersion": "v1", "metadata": meta("placeholder", managed=None), "type": "Opaque"}
case("secret-no-data", doc(empty_data), [], target="/api/v1/namespaces/dev/secrets/placeholder",
     note="a Secret without data: nothing to mask, output identical to input")

# --------------------------------------------------------------------------------------------
# Last-applied annotation

la_secret_manifest = {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"annotations": {}, "name": "smtp", "namespace": "dev"},
                      "stringData": {"password": STRINGDATA_PW, "username": "mailer"},
                      "data": {"api-token": b64(WEBHOOK_SECRET)}, "type": "Opaque"}
la_secret = secret("smtp", "Opaque", {"api-token": WEBHOOK_SECRET, "password": STRINGDATA_PW, "username": "mailer"},
                   annotations={"kubectl.kubernetes.io/last-applied-configuration": last_applied(la_secret_manifest)},
                   manager="kubectl-client-side-apply")
case("secret-last-applied", doc(la_secret), [STRINGDATA_PW, WEBHOOK_SECRET], target="/api/v1/namespaces/dev/secrets/smtp",
     note="stringData survives verbatim inside last-applied; in the annotation `data` sorts before `kind`")

# --------------------------------------------------------------------------------------------
# SecretList (items carry no kind), deletecollection, generic List


def secret_items():
    return [
        secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD}, with_kind=False, rv="4711"),
        secret("shop-tls", "kubernetes.io/tls", {"tls.crt": TLS_CERT, "tls.key": TLS_KEY}, with_kind=False, rv="4712"),
        secret("regcred", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": dockerconfig}, with_kind=False, rv="4713",
               annotations={"kubectl.kubernetes.io/last-applied-configuration": last_applied(
                   {"apiVersion": "v1", "kind": "Secret", "metadata": {"annotations": {}, "name": "regcred", "namespace": "dev"},
                    "data": {".dockerconfigjson": b64(dockerconfig)}, "type": "kubernetes.io/dockerconfigjson"})}),
    ]


slist = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "4790"}, "items": secret_items()}
case("secretlist", doc(slist), [DB_PASSWORD, DB_USER, TLS_KEY, TLS_CERT, dockerconfig],
     target="/api/v1/namespaces/dev/secrets?limit=500")

empty_list = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "4790"}, "items": []}
case("secretlist-empty", doc(empty_list), [], target="/api/v1/namespaces/dev/secrets?limit=500")

paged = {"kind": "SecretList", "apiVersion": "v1",
         "metadata": {"resourceVersion": "4790", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDc5MCwic3RhcnQiOiJvcmRlcnMtZGJcdTAwMDAifQ",
                      "remainingItemCount": 41}, "items": secret_items()[:1]}
case("secretlist-paged", doc(paged), [DB_PASSWORD, DB_USER], target="/api/v1/secrets?limit=1",
     note="the continue token is a base64url JSON, not a secret, and must pass through")

dc_list = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "4795"}, "items": secret_items()}
case("deletecollection-secrets", doc(dc_list), [DB_PASSWORD, DB_USER, TLS_KEY, dockerconfig], method="DELETE",
     target="/api/v1/namespaces/dev/secrets?dryRun=All", note="deletecollection returns every object it enumerated")

cm_app = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("app-settings"),
          "data": sorted_map({"LOG_LEVEL": "info", "FEATURE_FLAGS": "checkout-v2,search-beta"})}


def kubectl_list(items):
    """`kubectl get ... -o json`: a List, marshalled with sorted keys and 4-space indentation."""
    return json.dumps({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}},
                      indent=4, sort_keys=True, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


klist = kubectl_list([secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD}, managed=False), cm_app])
case("kubectl-list", klist, [DB_PASSWORD, DB_USER], target="/api/v1/namespaces/dev/secrets",
     note="kubectl -o json output (sorted keys, indented): `data` comes before `kind` in every item, so an "
          "item's kind is unknown when its data streams by and every rule applies: the ConfigMap's data is "
          "masked too. By design (json.rs: a late kind can only mask more)")

# --------------------------------------------------------------------------------------------
# ConfigMaps

cm_creds = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("orders-config", labels={"app": "orders"}),
            "data": sorted_map({
                "LOG_LEVEL": "debug",
                "application.properties": "server.port=8080\nspring.datasource.url=jdbc:postgresql://orders-db:5432/orders\n"
                                          f"spring.datasource.username={DB_USER}\nspring.datasource.password={DB_PASSWORD}\n",
                "aws-credentials": f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\nregion = eu-west-1\n",
                "github.json": go({"token": GH_PAT, "org": "shop"}),
                "slack.env": f"SLACK_BOT_TOKEN={SLACK}\nSLACK_CHANNEL=#deploys\n",
                "tls.key": EC_KEY,
                "kubeconfig": kubeconfig,
                "README": "Config for the orders service. Ask #platform for access <https://wiki.example.com/orders>.",
            })}
case("configmap-credentials", doc(cm_creds),
     [DB_PASSWORD, AWS_ID, AWS_SECRET, GH_PAT, SLACK, EC_KEY, CLIENT_KEY_DATA],
     target="/api/v1/namespaces/dev/configmaps/orders-config", detectors=True)

cm_plain = {"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": meta("nginx-conf", annotations={"kubectl.kubernetes.io/last-applied-configuration": last_applied(
                {"apiVersion": "v1", "data": {"nginx.conf": "worker_processes 2;\nevents { worker_connections 1024; }\n"},
                 "kind": "ConfigMap", "metadata": {"annotations": {}, "name": "nginx-conf", "namespace": "dev"}})}),
            "data": {"nginx.conf": "worker_processes 2;\nevents { worker_connections 1024; }\n"}}
case("configmap-last-applied", doc(cm_plain), [], target="/api/v1/namespaces/dev/configmaps/nginx-conf",
     note="nothing secret: output must equal input, including the annotation (whose data sorts before kind)")

cm_binary = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("fonts"),
             "data": {"index.txt": "DejaVuSans.ttf\n"}, "binaryData": {"DejaVuSans.ttf": b64(bytes(range(256)) * 4)}}
case("configmap-binarydata", doc(cm_binary), [], target="/api/v1/namespaces/dev/configmaps/fonts")

# --------------------------------------------------------------------------------------------
# Pods and pod templates


def env(name, value=None, value_from=None):
    e = {"name": name}
    if value is not None:
        e["value"] = value
    if value_from is not None:
        e["valueFrom"] = value_from
    return e


def container(name, image, env_list, extra=None):
    c = {"name": name, "image": image}
    if extra and "command" in extra:
        c["command"] = extra.pop("command")
    if extra and "ports" in extra:
        c["ports"] = extra.pop("ports")
    c["env"] = env_list
    c["resources"] = {"limits": {"memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}}
    c["terminationMessagePath"] = "/dev/termination-log"
    c["terminationMessagePolicy"] = "File"
    c["imagePullPolicy"] = "IfNotPresent"
    return c


def app_env():
    return [
        env("DATABASE_HOST", "orders-db.dev.svc.cluster.local"),
        env("DB_PASSWORD", DB_PASSWORD),
        env("API_TOKEN", API_KEY),
        env("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        env("SMTP_Credential", SMTP_PASSWORD),
        env("LOG_LEVEL", "info"),
        env("GREETING", "Hello <b>world</b> & welcome"),
        env("DB_USER", value_from={"secretKeyRef": {"name": "orders-db", "key": "username"}}),
        env("REDIS_PASSWORD", value_from={"secretKeyRef": {"name": "redis", "key": "password"}}),
        env("POD_IP", value_from={"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}),
        env("EMPTY_SECRET", ""),
        env("Go_Escaped_Passwd", GO_ESC_SECRET),
    ]


APP_SECRETS = [DB_PASSWORD, API_KEY, AWS_SECRET, SMTP_PASSWORD, GO_ESC_SECRET]


def pod_spec(env_list, init_env=None):
    s = {"volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420}}]}
    if init_env is not None:
        s["initContainers"] = [container("migrate", "registry.example.com/orders-migrate:1.8.2", init_env,
                                         {"command": ["/bin/migrate", "--dsn=$(DATABASE_URL)"]})]
    s["containers"] = [container("orders", "registry.example.com/orders:1.8.2", env_list,
                                 {"ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}),
                       container("metrics", "prom/statsd-exporter:v0.26.1", [env("STATSD_MAPPING", "/etc/statsd/mapping.yaml")])]
    s.update({"restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
              "serviceAccountName": "orders", "serviceAccount": "orders", "securityContext": {}, "schedulerName": "default-scheduler"})
    return s


def pod(name, with_kind=True):
    p = {}
    if with_kind:
        p.update({"kind": "Pod", "apiVersion": "v1"})
    p["metadata"] = meta(name, labels={"app": "orders", "pod-template-hash": "7d9f8c6b5"},
                         owner=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f8c6b5",
                                 "uid": "5d0b2c1e-3f4a-4b6c-8d9e-0a1b2c3d4e5f", "controller": True, "blockOwnerDeletion": True}])
    p["spec"] = pod_spec(app_env(), init_env=[env("DATABASE_URL", "postgres://orders-db:5432/orders?sslmode=require"),
                                             env("MIGRATE_TOKEN", GH_PAT)])
    p["spec"]["nodeName"] = "worker-2"
    p["status"] = {"phase": "Running", "hostIP": "10.0.3.12", "podIP": "10.244.2.17", "startTime": "2024-05-02T09:14:30Z",
                   "containerStatuses": [{"name": "orders", "state": {"running": {"startedAt": "2024-05-02T09:14:41Z"}},
                                          "lastState": {}, "ready": True, "restartCount": 0,
                                          "image": "registry.example.com/orders:1.8.2",
                                          "imageID": "registry.example.com/orders@sha256:" + rnd(64, "0123456789abcdef"),
                                          "containerID": "containerd://" + rnd(64, "0123456789abcdef"), "started": True}],
                   "qosClass": "Burstable"}
    return p


case("pod-env", doc(pod("orders-7d9f8c6b5-x2x9q")), APP_SECRETS + [GH_PAT],
     target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q",
     note="credential-named env values masked (DB_PASSWORD, API_TOKEN, AWS_SECRET_ACCESS_KEY, SMTP_Credential, "
          "Go_Escaped_Passwd, EMPTY_SECRET, MIGRATE_TOKEN); DATABASE_URL is not credential-named, so its password "
          "is left to the detectors; valueFrom references stay")

podlist = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "88211"},
           "items": [pod("orders-7d9f8c6b5-x2x9q", False), pod("orders-7d9f8c6b5-k8m4t", False)]}
case("podlist-env", doc(podlist), APP_SECRETS + [GH_PAT], target="/api/v1/namespaces/dev/pods?limit=500")

vf = {"kind": "Pod", "apiVersion": "v1", "metadata": meta("hand-written"),
      "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                               "env": [{"value": VALUE_FIRST_TOKEN, "name": "SERVICE_TOKEN"},
                                       {"value": "plain-value-stays", "name": "MODE"},
                                       {"valueFrom": {"secretKeyRef": {"key": "token", "name": "svc"}}, "name": "OTHER_TOKEN"}]}]}}
case("pod-env-value-before-name", doc(vf), [VALUE_FIRST_TOKEN], target="/api/v1/namespaces/dev/pods/hand-written",
     note="Go never writes value before name; an aggregated API server or a proxy might")


def template(env_list):
    return {"metadata": {"creationTimestamp": None, "labels": {"app": "orders"}}, "spec": pod_spec(env_list)}


deploy_manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"annotations": {}, "labels": {"app": "orders"}, "name": "orders", "namespace": "dev"},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "orders"}},
                            "template": {"metadata": {"labels": {"app": "orders"}},
                                         "spec": {"containers": [{"env": [{"name": "DB_PASSWORD", "value": DB_PASSWORD},
                                                                          {"name": "LOG_LEVEL", "value": "info"},
                                                                          {"name": "STRIPE_KEY", "value": API_KEY}],
                                                                  "image": "registry.example.com/orders:1.8.2", "name": "orders"}]}}}}
deploy = {"kind": "Deployment", "apiVersion": "apps/v1",
          "metadata": meta("orders", generation=4, labels={"app": "orders"},
                           annotations={"deployment.kubernetes.io/revision": "4",
                                        "kubectl.kubernetes.io/last-applied-configuration": last_applied(deploy_manifest)}),
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "orders"}}, "template": template(app_env()),
                   "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                   "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
          "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                     "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-05-02T09:15:02Z",
                                     "lastTransitionTime": "2024-05-02T09:15:02Z", "reason": "MinimumReplicasAvailable",
                                     "message": "Deployment has minimum availability."}]}}
case("deployment-env-last-applied", doc(deploy), APP_SECRETS, target="/apis/apps/v1/namespaces/dev/deployments/orders",
     note="env masked in spec.template and inside the last-applied annotation")

sts = {"kind": "StatefulSet", "apiVersion": "apps/v1", "metadata": meta("redis", generation=1),
       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "redis"}},
                "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "redis"}},
                             "spec": {"containers": [{"name": "redis", "image": "redis:7.2",
                                                      "args": ["--requirepass", "$(REDIS_PASSWORD)"],
                                                      "env": [env("REDIS_PASSWORD", REDIS_URL_PW), env("REDIS_PORT", "6379")]}]}},
                "serviceName": "redis", "podManagementPolicy": "OrderedReady",
                "volumeClaimTemplates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                          "metadata": {"name": "data", "creationTimestamp": None},
                                          "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "8Gi"}}},
                                          "status": {"phase": "Pending"}}]},
       "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1}}
case("statefulset-env", doc(sts), [REDIS_URL_PW], target="/apis/apps/v1/namespaces/dev/statefulsets/redis",
     note="volumeClaimTemplates items carry their own kind (PersistentVolumeClaim) but are not anchors")

cron = {"kind": "CronJob", "apiVersion": "batch/v1", "metadata": meta("nightly-backup", generation=2),
        "spec": {"schedule": "0 3 * * *", "concurrencyPolicy": "Forbid", "suspend": False,
                 "jobTemplate": {"metadata": {"creationTimestamp": None},
                                 "spec": {"backoffLimit": 2,
                                          "template": {"metadata": {"creationTimestamp": None},
                                                       "spec": {"containers": [{"name": "backup", "image": "registry.example.com/pg-backup:2.1",
                                                                                "env": [env("PGPASSWORD", DB_PASSWORD), env("S3_BUCKET", "orders-backups"),
                                                                                        env("AWS_ACCESS_KEY_ID", AWS_ID), env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)]}],
                                                                "restartPolicy": "OnFailure"}}}},
                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1},
        "status": {"lastScheduleTime": "2024-05-02T03:00:00Z", "lastSuccessfulTime": "2024-05-02T03:04:12Z"}}
case("cronjob-env", doc(cron), [DB_PASSWORD, AWS_ID, AWS_SECRET], target="/apis/batch/v1/namespaces/dev/cronjobs/nightly-backup",
     note="PGPASSWORD and AWS_ACCESS_KEY_ID are credential-named (they contain PASSWORD and KEY); S3_BUCKET is not")

ds_plain = {"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": meta("node-exporter", namespace="monitoring", generation=1),
            "spec": {"selector": {"matchLabels": {"app": "node-exporter"}},
                     "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "node-exporter"}},
                                  "spec": {"containers": [{"name": "node-exporter", "image": "quay.io/prometheus/node-exporter:v1.8.0",
                                                           "args": ["--path.rootfs=/host"], "env": [env("NODE_NAME", "worker-1"), env("LISTEN", ":9100")]}],
                                           "hostNetwork": True, "hostPID": True}}},
            "status": {"currentNumberScheduled": 3, "numberMisscheduled": 0, "desiredNumberScheduled": 3, "numberReady": 3}}
case("daemonset-no-credentials", doc(ds_plain), [], target="/apis/apps/v1/namespaces/monitoring/daemonsets/node-exporter",
     note="no credential-named env: output identical to input")

# --------------------------------------------------------------------------------------------
# Tokens

TR_TOKEN = jwt({"aud": ["vault"], "exp": 1714644867, "iat": 1714641267, "iss": "https://kubernetes.default.svc.cluster.local",
                "kubernetes.io": {"namespace": "dev", "pod": {"name": "orders-7d9f8c6b5-x2x9q", "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"},
                                  "serviceaccount": {"name": "orders", "uid": "1f0c1bd2-8d1e-4a4b-9b0e-3c6f7f1e2a90"}},
                "nbf": 1714641267, "sub": "system:serviceaccount:dev:orders"})
treq = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": "orders", "namespace": "dev", "creationTimestamp": None},
        "spec": {"audiences": ["vault"], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "orders-7d9f8c6b5-x2x9q", "uid": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"}},
        "status": {"token": TR_TOKEN, "expirationTimestamp": "2024-05-02T10:14:27Z"}}
case("tokenrequest", doc(treq), [TR_TOKEN], method="POST", target="/api/v1/namespaces/dev/serviceaccounts/orders/token",
     headers=JSON_ACCEPT + [["Content-Type", "application/json"]])

trev = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": None},
        "spec": {"token": SA_JWT, "audiences": ["https://kubernetes.default.svc.cluster.local"]},
        "status": {"authenticated": True,
                   "user": {"username": "system:serviceaccount:dev:deployer", "uid": "1f0c1bd2-8d1e-4a4b-9b0e-3c6f7f1e2a90",
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:dev", "system:authenticated"],
                            "extra": {"authentication.kubernetes.io/credential-id": ["JTI=5b1f8d2e-7c3a-4e9b-a1d0-6f2e8c4b9a37"]}},
                   "audiences": ["https://kubernetes.default.svc.cluster.local"]}}
case("tokenreview", doc(trev), [SA_JWT], method="POST", target="/apis/authentication.k8s.io/v1/tokenreviews",
     headers=JSON_ACCEPT + [["Content-Type", "application/json"]])

# --------------------------------------------------------------------------------------------
# Tables, PartialObjectMetadata

SECRET_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name",
     "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
     "priority": 0},
    {"name": "Type", "type": "string", "format": "", "description": "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types", "priority": 0},
    {"name": "Data", "type": "string", "format": "", "description": "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata", "priority": 0},
]


def pom(o):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}


items = secret_items()
table_obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "4790"},
             "columnDefinitions": SECRET_COLUMNS,
             "rows": [{"cells": [i["metadata"]["name"], i["type"], len(i["data"]), "5d"],
                       "object": {"kind": "Secret", "apiVersion": "v1", **i}} for i in items]}
case("table-secrets-include-object", doc(table_obj), [DB_PASSWORD, DB_USER, TLS_KEY, dockerconfig],
     target="/api/v1/namespaces/dev/secrets?includeObject=Object&limit=500", headers=TABLE_ACCEPT)

table_meta = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "4790"},
              "columnDefinitions": SECRET_COLUMNS,
              "rows": [{"cells": [i["metadata"]["name"], i["type"], len(i["data"]), "5d"], "object": pom(i)}
                       for i in [secret_items()[0], secret_items()[2], la_secret]]}
case("table-secrets-metadata", doc(table_meta), [dockerconfig, STRINGDATA_PW, WEBHOOK_SECRET],
     target="/api/v1/namespaces/dev/secrets?limit=500", headers=TABLE_ACCEPT,
     note="the default includeObject=Metadata: rows carry PartialObjectMetadata with last-applied")

table_none = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "4790"},
              "columnDefinitions": SECRET_COLUMNS,
              "rows": [{"cells": [i["metadata"]["name"], i["type"], len(i["data"]), "5d"], "object": None} for i in secret_items()]}
case("table-secrets-include-none", doc(table_none), [], target="/api/v1/namespaces/dev/secrets?includeObject=None",
     headers=TABLE_ACCEPT)

POD_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": SECRET_COLUMNS[0]["description"], "priority": 0},
    {"name": "Ready", "type": "string", "format": "", "description": "The aggregate readiness state of this pod for accepting traffic.", "priority": 0},
    {"name": "Status", "type": "string", "format": "", "description": "The aggregate status of the containers in this pod.", "priority": 0},
    {"name": "Restarts", "type": "string", "format": "", "description": "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": SECRET_COLUMNS[3]["description"], "priority": 0},
    {"name": "IP", "type": "string", "format": "", "description": "The IP address assigned to this pod", "priority": 1},
    {"name": "Node", "type": "string", "format": "", "description": "The node name assigned to this pod", "priority": 1},
]
table_pods = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "88211"},
              "columnDefinitions": POD_COLUMNS,
              "rows": [{"cells": [p["metadata"]["name"], "1/1", "Running", 0, "5d", "10.244.2.17", "worker-2"],
                        "object": {"kind": "Pod", "apiVersion": "v1", **p}} for p in [pod("orders-7d9f8c6b5-x2x9q", False)]]}
case("table-pods-include-object", doc(table_pods), APP_SECRETS + [GH_PAT],
     target="/api/v1/namespaces/dev/pods?includeObject=Object", headers=TABLE_ACCEPT)

CRD_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": SECRET_COLUMNS[0]["description"], "priority": 0},
    {"name": "Host", "type": "string", "format": "", "description": "", "priority": 0},
    {"name": "Password", "type": "string", "format": "", "description": "", "priority": 0},
    {"name": "Age", "type": "date", "format": "", "description": SECRET_COLUMNS[3]["description"], "priority": 0},
]
table_crd = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "9102"},
             "columnDefinitions": CRD_COLUMNS,
             "rows": [{"cells": ["orders", "orders-db.dev", f"postgres://{DB_USER}:{DB_PASSWORD}@orders-db:5432/orders", "2024-05-02T09:14:27Z"],
                       "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": meta("orders", generation=1)}}]}
case("table-crd-printer-column", doc(table_crd), [DB_PASSWORD], target="/apis/db.example.com/v1/namespaces/dev/databases",
     headers=TABLE_ACCEPT, detectors=True,
     note="a CRD printer column exposes a DSN with a password: only the detectors can see it")

pom_list = {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "4790"},
            "items": [pom(i) for i in [secret_items()[0], secret_items()[2], la_secret]]}
case("partialobjectmetadatalist", doc(pom_list), [dockerconfig, STRINGDATA_PW, WEBHOOK_SECRET],
     target="/api/v1/namespaces/dev/secrets?resourceVersion=0", headers=POM_ACCEPT)

pom_one = pom(deploy)
case("partialobjectmetadata-deployment", doc(pom_one), [DB_PASSWORD, API_KEY],
     target="/apis/apps/v1/namespaces/dev/deployments/orders",
     headers=[["Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"]])

# --------------------------------------------------------------------------------------------
# Status

forbidden = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": "secrets \"orders-db\" is forbidden: User \"system:serviceaccount:dev:agent\" cannot get resource \"secrets\" in API group \"\" in the namespace \"dev\"",
             "reason": "Forbidden", "details": {"name": "orders-db", "kind": "secrets"}, "code": 403}
case("status-forbidden", doc(forbidden), [], target="/api/v1/namespaces/dev/secrets/orders-db")

deleted_status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                  "details": {"name": "orders-db", "kind": "secrets", "uid": "3c2b1a09-8f7e-4d6c-5b4a-392817160504"}}
case("delete-secret-status", doc(deleted_status), [], method="DELETE", target="/api/v1/namespaces/dev/secrets/orders-db",
     note="deleting a Secret returns a Status")

invalid = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": f"Secret \"smtp\" is invalid: data[password=hunter2-{SMTP_PASSWORD}]: Invalid value: \"password={SMTP_PASSWORD}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
           "reason": "Invalid",
           "details": {"name": "smtp", "kind": "Secret",
                       "causes": [{"reason": "FieldValueInvalid", "message": f"Invalid value: \"password={SMTP_PASSWORD}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                                   "field": f"data[password={SMTP_PASSWORD}]"}]},
           "code": 422}
case("status-invalid-echo", doc(invalid), [SMTP_PASSWORD], method="POST", target="/api/v1/namespaces/dev/secrets",
     headers=JSON_ACCEPT + [["Content-Type", "application/json"]], detectors=True,
     note="a validation error echoes a `password=...` the client sent; only the generic assignment detector sees it")

# --------------------------------------------------------------------------------------------
# Writes


def with_kind(o, kind, api="v1"):
    return {"kind": kind, "apiVersion": api, **{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}}


created = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD}, manager="kubectl-create")
case("create-secret", doc(created), [DB_PASSWORD, DB_USER], method="POST", target="/api/v1/namespaces/dev/secrets?fieldManager=kubectl-create&fieldValidation=Strict",
     headers=JSON_ACCEPT + [["Content-Type", "application/json"]])

patched = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD, "api-key": API_KEY}, manager="kubectl-patch")
case("patch-secret-dry-run", doc(patched), [DB_PASSWORD, DB_USER, API_KEY], method="PATCH",
     target="/api/v1/namespaces/dev/secrets/orders-db?dryRun=All",
     headers=JSON_ACCEPT + [["Content-Type", "application/merge-patch+json"]],
     note="an empty merge patch with dryRun=All returns the whole Secret")

ssa = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD}, manager="kubectl")
case("apply-secret-server-side", doc(ssa), [DB_PASSWORD, DB_USER], method="PATCH",
     target="/api/v1/namespaces/dev/secrets/orders-db?fieldManager=kubectl&force=false",
     headers=JSON_ACCEPT + [["Content-Type", "application/apply-patch+yaml"]])

upd = dict(deploy)
case("update-deployment", doc(upd), APP_SECRETS, method="PUT", target="/apis/apps/v1/namespaces/dev/deployments/orders",
     headers=JSON_ACCEPT + [["Content-Type", "application/json"]])

deleted_pod = pod("orders-7d9f8c6b5-x2x9q")
deleted_pod["metadata"]["deletionTimestamp"] = "2024-05-02T11:00:00Z"
deleted_pod["metadata"]["deletionGracePeriodSeconds"] = 30
deleted_pod["metadata"] = {k: deleted_pod["metadata"][k] for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp",
                                                                   "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "ownerReferences"]}
case("delete-pod-returns-object", doc(deleted_pod), APP_SECRETS + [GH_PAT], method="DELETE",
     target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q")

# --------------------------------------------------------------------------------------------
# Watch streams


def event(t, o):
    return go({"type": t, "object": o}) + "\n"


s1 = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD}, rv="5001")
s2 = secret("shop-tls", "kubernetes.io/tls", {"tls.crt": TLS_CERT, "tls.key": TLS_KEY}, rv="5002")
s1m = secret("orders-db", "Opaque", {"username": DB_USER, "password": DB_PASSWORD + "-rotated"}, rv="5010")
bookmark = {"kind": "Secret", "apiVersion": "v1",
            "metadata": {"resourceVersion": "5003", "creationTimestamp": None, "annotations": {"k8s.io/initial-events-end": "true"}}}
expired = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "too old resource version: 4700 (5003)", "reason": "Expired", "code": 410}
watch = (event("ADDED", s1) + event("ADDED", s2) + event("BOOKMARK", bookmark) + event("MODIFIED", s1m)
         + event("DELETED", s1m) + event("ERROR", expired))
case("watch-secrets", watch, [DB_PASSWORD, DB_USER, TLS_KEY, TLS_CERT, DB_PASSWORD + "-rotated"],
     target="/api/v1/namespaces/dev/secrets?allowWatchBookmarks=true&resourceVersion=5000&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&watch=true",
     headers=[["Accept", "application/json"], ["User-Agent", "kube-controller-manager/v1.33.1"]])

watch_legacy = event("ADDED", s1) + event("DELETED", s1)
case("watch-secrets-legacy-path", watch_legacy, [DB_PASSWORD, DB_USER], target="/api/v1/watch/namespaces/dev/secrets",
     note="the deprecated /watch/ prefix")

p1 = pod("orders-7d9f8c6b5-x2x9q")
watch_pods = event("ADDED", p1) + event("MODIFIED", p1) + event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "88300", "creationTimestamp": None}})
case("watch-pods", watch_pods, APP_SECRETS + [GH_PAT], target="/api/v1/namespaces/dev/pods?watch=1&resourceVersion=88211")

tw1 = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "5001"}, "columnDefinitions": SECRET_COLUMNS,
       "rows": [{"cells": ["smtp", "Opaque", 3, "0s"], "object": pom(la_secret)}]}
tw2 = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "5002"}, "columnDefinitions": None,
       "rows": [{"cells": ["regcred", "kubernetes.io/dockerconfigjson", 1, "0s"], "object": pom(secret_items()[2])}]}
tw3 = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "5009"}, "columnDefinitions": None,
       "rows": [{"cells": ["smtp", "Opaque", 3, "2m"], "object": pom(la_secret)}]}
watch_table = event("ADDED", tw1) + event("ADDED", tw2) + event("DELETED", tw3)
case("watch-table-secrets", watch_table, [STRINGDATA_PW, WEBHOOK_SECRET, dockerconfig],
     target="/api/v1/namespaces/dev/secrets?resourceVersion=5000&watch=true", headers=TABLE_ACCEPT,
     note="kubectl get secrets -w: column definitions only in the first event")

tw_obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "5001"}, "columnDefinitions": None,
          "rows": [{"cells": ["orders-db", "Opaque", 2, "0s"], "object": s1}]}
case("watch-table-include-object", event("MODIFIED", tw_obj), [DB_PASSWORD, DB_USER],
     target="/api/v1/namespaces/dev/secrets?includeObject=Object&watch=true", headers=TABLE_ACCEPT)

# --------------------------------------------------------------------------------------------
# Pod logs

log = (
    "2024-05-02T09:14:41.102Z INFO  starting orders 1.8.2\n"
    "2024-05-02T09:14:41.230Z DEBUG config loaded: db=orders-db:5432 user=orders_app_rw\n"
    f"2024-05-02T09:14:41.231Z DEBUG using service account token {SA_JWT}\n"
    f"2024-05-02T09:14:41.232Z DEBUG github client ready token={GH_PAT}\n"
    "2024-05-02T09:14:41.240Z INFO  loaded TLS key:\n"
    + TLS_KEY +
    "2024-05-02T09:14:41.250Z INFO  listening on :8080\n"
    f"2024-05-02T09:14:42.001Z WARN  slack notify failed for {SLACK}: channel_not_found\n"
    "2024-05-02T09:14:43.500Z INFO  GET /healthz 200 0.4ms\n"
)
case("pod-log", log, [SA_JWT, GH_PAT, TLS_KEY, SLACK], target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q/log?container=orders&tailLines=200",
     headers=[["Accept", "*/*"], ["User-Agent", KUBECTL_UA]], ct="text/plain", ext="log", detectors=True)

log_clean = "".join(f"2024-05-02T09:15:{i:02d}.000Z INFO  GET /api/orders/{1000 + i} 200 {i % 7}.{i % 10}ms\n" for i in range(40))
case("pod-log-clean", log_clean, [], target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q/log?follow=true",
     headers=[["Accept", "*/*"]], ct="text/plain; charset=utf-8", ext="log")

# --------------------------------------------------------------------------------------------
# gzip (the harness gzips the plain input)

big = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "99120"},
       "items": [secret(f"tenant-{i:04d}-db", "Opaque", {"username": f"tenant_{i:04d}", "password": f"pw-{i:04d}-" + rnd(24)},
                        with_kind=False, rv=str(90000 + i)) for i in range(360)]}
big_secrets = [base64.b64decode(big["items"][i]["data"]["password"]).decode() for i in (0, 1, 179, 358, 359)]
case("gzip-secretlist-large", doc(big), big_secrets, target="/api/v1/secrets?limit=500",
     headers=[["Accept", "application/json"], ["Accept-Encoding", "gzip"], ["User-Agent", KUBECTL_UA]], ce="gzip",
     note="over 128 KiB, so the API server gzips it; the harness compresses inputs/gzip-secretlist-large.json")

# --------------------------------------------------------------------------------------------
# Policies: masks.rules (paths, filters, hmac), disabled masks

database = {"kind": "Database", "apiVersion": "db.example.com/v1", "metadata": meta("orders", generation=2),
            "spec": {"engine": "postgres", "host": "orders-db.dev.svc", "password": DB_PASSWORD,
                     "users": [{"name": "admin", "key": DB_PASSWORD}, {"name": "reader", "key": "reader-key-is-not-masked"},
                               {"name": "db-admin-2", "key": API_KEY}],
                     "credentials": [{"name": "replication", "value": DB_PASSWORD}, {"name": "backup", "value": AWS_SECRET}],
                     "caBundle": b64(CA_CRT)},
            "status": {"phase": "Ready", "endpoint": "orders-db.dev.svc:5432"}}
case("custom-rules-database", doc(database), [DB_PASSWORD, API_KEY, AWS_SECRET, b64(CA_CRT)], policy="custom-rules.yaml",
     target="/apis/db.example.com/v1/namespaces/dev/databases/orders",
     note="hmac: equal values give equal tokens (spec.password, users[admin].key and credentials[replication].value "
          "are the same password); the filter keeps reader's key; caBundle is hmac-base64")

dblist = {"kind": "DatabaseList", "apiVersion": "db.example.com/v1", "metadata": {"resourceVersion": "9120", "continue": ""},
          "items": [database, with_kind({**database, "metadata": meta("billing", generation=1)}, "Database", "db.example.com/v1")]}
case("custom-rules-database-list", doc(dblist), [DB_PASSWORD, API_KEY, AWS_SECRET], policy="custom-rules.yaml",
     target="/apis/db.example.com/v1/databases")

other_group = {"kind": "Database", "apiVersion": "other.example.org/v1", "metadata": meta("legacy"),
               "spec": {"password": "not-masked-other-group", "users": [{"name": "admin", "key": "not-masked-either"}]}}
case("custom-rules-other-group", doc(other_group), [], policy="custom-rules.yaml",
     target="/apis/other.example.org/v1/namespaces/dev/databases/legacy",
     note="the rule names apiGroups [db.example.com]: a Database of another group is left alone")

cm_rule = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("legacy-app"),
           "data": {"db.password": "cm-db-pass-" + rnd(10), "db.user": "legacy", "mode": "prod"}}
case("custom-rules-configmap-key", doc(cm_rule), [cm_rule["data"]["db.password"]], policy="custom-rules.yaml",
     target="/api/v1/namespaces/dev/configmaps/legacy-app", note="a bracketed key with a dot")

pod_hmac = {"kind": "Pod", "apiVersion": "v1", "metadata": meta("hmac-env"),
            "spec": {"containers": [{"name": "app", "image": "app:1",
                                     "env": [env("DB_PASSWORD", DB_PASSWORD), env("REPLICA_HOST", "db-1"),
                                             env("SHARD", "eu-west"), env("SHARD_COPY", "eu-west")]}]}}
case("custom-rules-env-hmac", doc(pod_hmac), [DB_PASSWORD], policy="custom-rules.yaml",
     target="/api/v1/namespaces/dev/pods/hmac-env",
     note="custom rule hmacs every env value of a Pod; for DB_PASSWORD the built-in env-credentials marker, "
          "which reveals less, must win")

case("disabled-env-credentials", doc(pod("orders-7d9f8c6b5-x2x9q")), [], policy="no-env-credentials.yaml",
     target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q",
     note="env-credentials and every detector are off: the pod comes back unchanged")

case("disabled-env-secret-still-masked", doc(opaque), [DB_PASSWORD, DB_USER, API_KEY], policy="no-env-credentials.yaml",
     target="/api/v1/namespaces/dev/secrets/orders-db")

la_rotated = secret("smtp", "Opaque", {"api-token": WEBHOOK_SECRET, "password": STRINGDATA_PW, "username": "mailer",
                                      "rotated-token": WEBHOOK_SECRET + "-v2"},
                    annotations={"kubectl.kubernetes.io/last-applied-configuration": last_applied(la_secret_manifest)},
                    manager="kubectl-client-side-apply")
case("disabled-last-applied", doc(la_rotated), [WEBHOOK_SECRET + "-v2", WEBHOOK_SECRET, STRINGDATA_PW],
     policy="no-last-applied.yaml", target="/api/v1/namespaces/dev/secrets/smtp", detectors=True,
     note="last-applied is off: the annotation is a plain string, so only the detectors look into it (they "
          "find the api-token and the stringData password); data is still masked")

# --------------------------------------------------------------------------------------------
# Fail closed: the expected output is what is emitted before the error (nothing after it)

yaml_secret = f"""apiVersion: v1
data:
  password: {b64(DB_PASSWORD)}
kind: Secret
metadata:
  name: orders-db
  namespace: dev
type: Opaque
"""
case("refuse-yaml", yaml_secret, [DB_PASSWORD], target="/api/v1/namespaces/dev/secrets/orders-db",
     headers=[["Accept", "application/yaml"]], ct="application/yaml", ext="yaml", error="content-type",
     note="kubeleash asks for JSON; a YAML body is refused whole")

case("refuse-exec", "\u0001sh-5.2$ cat /var/run/secrets/kubernetes.io/serviceaccount/token\n", [], method="POST",
     target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q/exec?command=sh&stdin=true&stdout=true&tty=true",
     headers=[["Upgrade", "websocket"], ["Connection", "Upgrade"]], ct="", ext="txt", error="unmaskable")

case("refuse-brotli", doc(opaque), [DB_PASSWORD, DB_USER, API_KEY], target="/api/v1/namespaces/dev/secrets/orders-db",
     ce="br", error="content-encoding")

trunc = doc(opaque)
cut = trunc.index(b64(DB_PASSWORD)) + 6
case("truncated-in-secret-value", trunc[:cut], [API_KEY, b64(DB_PASSWORD)[:6]], target="/api/v1/namespaces/dev/secrets/orders-db",
     error="incomplete", note="the connection dropped inside a data value: nothing of the value is emitted")

bad = doc(slist).replace('"type":"kubernetes.io/tls"', '"type":kubernetes.io/tls"', 1)
case("malformed-mid-list", bad, [DB_PASSWORD, DB_USER, TLS_KEY, TLS_CERT, dockerconfig], target="/api/v1/namespaces/dev/secrets",
     error="malformed", note="output stops before the bad byte; later items (and their secrets) are withheld")

deep = '{"kind":"Widget","apiVersion":"example.com/v1","spec":' + "[" * 300 + "]" * 300 + "}\n"
case("too-deep", deep, [], target="/apis/example.com/v1/namespaces/dev/widgets/w", error="too-deep")


# --------------------------------------------------------------------------------------------
# Issue 12: where credentials live that the built-in masks used to miss (items 7, 8, 20)

CR_PASS = "cr-" + rnd(20)
ARG_PASS = "arg-" + rnd(18)
HDR_TOKEN = "hdr-" + rnd(24)
cr_container = {"name": "redis", "image": "redis:7.2",
                "command": ["redis-server"], "args": ["--requirepass", "$(REDIS_PASSWORD)", "--masterauth", ARG_PASS],
                "env": [env("REDIS_PASSWORD", CR_PASS), env("PGPASS", CR_PASS + "-pg"), env("MYSQL_PWD", CR_PASS + "-my"),
                        env("REDIS_PORT", "6379")],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080,
                                              "httpHeaders": [{"name": "Authorization", "value": "Token " + HDR_TOKEN},
                                                              {"name": "Accept", "value": "application/json"}]}}}
cr = {"kind": "ControllerRevision", "apiVersion": "apps/v1",
      "metadata": meta("redis-7c9d5b8f4", labels={"app": "redis", "controller-revision-hash": "7c9d5b8f4"}),
      "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "redis"}},
                                     "spec": {"containers": [cr_container]}}}},
      "revision": 3}
case("controllerrevision-statefulset", doc(cr), [CR_PASS, ARG_PASS, HDR_TOKEN],
     target="/apis/apps/v1/namespaces/dev/controllerrevisions/redis-7c9d5b8f4",
     note="a StatefulSet's pod template as its ControllerRevision keeps it: env (PGPASS, MYSQL_PWD), a credential "
          "flag's value in args ($(VAR) references stay), probe httpHeaders")

TERM_PASS = "term-" + rnd(16)
MYSQL_PASS = "my-" + rnd(16)
pod_args = {"kind": "Pod", "apiVersion": "v1", "metadata": meta("migrate-5k2x"),
            "spec": {"containers": [{"name": "migrate", "image": "mysql:8.4", "command": ["mysql"],
                                     "args": ["-h", "orders-db", "-u", "root", "-p" + MYSQL_PASS, "orders"]},
                                    {"name": "sh", "image": "busybox", "command": ["sh", "-c"],
                                     "args": ["curl -u admin:" + ARG_PASS + " https://backup.example.com/run"]}]},
            "status": {"containerStatuses": [{"name": "migrate", "state": {"terminated": {
                "exitCode": 1, "reason": "Error",
                "message": "\u001b[31mERROR\u001b[0m connect failed: \u001b[36mpassword\u001b[0m=" + TERM_PASS + "\n"}}}]}}
case("pod-args-termination-message", doc(pod_args), [MYSQL_PASS, ARG_PASS, TERM_PASS],
     target="/api/v1/namespaces/dev/pods/migrate-5k2x", detectors=True,
     note="mysql -pPASS in args (a known tool), curl -u in a shell script, a coloured terminationMessage")

ST_SECRET = rnd(24)
status_obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": "Operation cannot be fulfilled on secrets \"orders-db\": the object has been modified",
              "reason": "Conflict",
              "details": {"name": "orders-db", "kind": "secrets",
                          "object": {"apiVersion": "v1", "data": {"password": b64(ST_SECRET)}, "kind": "Secret",
                                     "metadata": {"name": "orders-db"}}},
              "code": 409}
case("status-details-object", doc(status_obj), [b64(ST_SECRET)], method="PUT",
     target="/api/v1/namespaces/dev/secrets/orders-db",
     note="a Status whose details embed an object: every object there is one of unknown kind")

root_array = "[" + go({"apiVersion": "v1", "data": {"token": b64(ST_SECRET + "-arr")}, "kind": "Secret",
                       "metadata": {"name": "a"}}) + "]\n"
case("root-array", root_array, [b64(ST_SECRET + "-arr")], target="/apis/example.com/v1/namespaces/dev/widgets",
     note="a response whose root is an array: every object in it is one of unknown kind")

TBL_PW = "tbl-" + rnd(18)
TBL_PW2 = "tbl-" + rnd(18)
db_columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name must be unique", "priority": 0},
              {"name": "Host", "type": "string", "format": "", "description": "", "priority": 0},
              {"name": "Password", "type": "string", "format": "", "description": "", "priority": 0},
              {"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}]


def db_row(name, pw):
    return {"cells": [name, name + "-db.dev", pw, "4h"],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": meta(name, created="2024-05-02T09:14:27Z")}}


db_table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "9102"},
            "columnDefinitions": db_columns, "rows": [db_row("orders", TBL_PW), db_row("users", TBL_PW2)]}
case("custom-rules-database-table", doc(db_table), [TBL_PW, TBL_PW2], policy="custom-rules.yaml",
     target="/apis/db.example.com/v1/namespaces/dev/databases", headers=TABLE_ACCEPT,
     note="kubectl get databases: the Database rule reaches the cells (all but the name column)")
watch_db = (go({"type": "ADDED", "object": db_table}) + "\n"
            + go({"type": "MODIFIED", "object": {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                                                 "metadata": {"resourceVersion": "9103"}, "columnDefinitions": None,
                                                 "rows": [db_row("orders", TBL_PW + "-2")]}}) + "\n")
case("custom-rules-database-watch-table", watch_db, [TBL_PW, TBL_PW2, TBL_PW + "-2"], policy="custom-rules.yaml",
     target="/apis/db.example.com/v1/namespaces/dev/databases?watch=true", headers=TABLE_ACCEPT,
     note="kubectl get databases -w: column definitions only in the first event")

LOG_PW = rnd(14)
log_formats = ("time=\"2024-05-02T09:14:41Z\" level=info msg=connect \u001b[36mpassword\u001b[0m=" + LOG_PW + "a\n"
               + "+ curl -sf -u admin:" + LOG_PW + "b https://backup.example.com/run\n"
               + "+ redis-cli -h redis -a " + LOG_PW + "c ping\n"
               + "+ mysql -h orders-db -u root -p" + LOG_PW + "d orders\n"
               + "GET /login?user=bob&password%3D" + LOG_PW + "e HTTP/1.1\n"
               + '{"level":"info","cfg":{"token":"' + LOG_PW + 'f\\/x\\u002By"}}\n'
               + "user\tbob\tpassword\t" + LOG_PW + "g\n"
               + "bootstrap: the admin password is " + LOG_PW + "h (change it)\n"
               + "the password is required\n")
case("pod-log-formats", log_formats, [LOG_PW + s for s in "abcdefgh"], ct="text/plain", ext="log", detectors=True,
     target="/api/v1/namespaces/dev/pods/orders-7d9f8c6b5-x2x9q/log?container=orders",
     headers=[["Accept", "*/*"], ["User-Agent", KUBECTL_UA]],
     note="log formats honest programs write: ANSI-coloured keys, curl -u, redis-cli -a, mysql -pX, percent-encoding, "
          "JSON escapes, tab-separated and prose forms")

# --------------------------------------------------------------------------------------------
# Masker classes found after the hardening (new cases go last: the random stream above stays)

CR_PW, CR_PASS = rnd(16), rnd(16)
cr_creds = {"apiVersion": "example.com/v1", "kind": "Link", "metadata": meta("orders-link"),
            "spec": {"connection": {"host": "orders-db", "pass": CR_PASS, "port": 5432}, "password": CR_PW,
                     "secretName": "orders-db"}}
case("custom-resource-credential-keys", doc(cr_creds), [CR_PW, CR_PASS],
     target="/apis/example.com/v1/namespaces/dev/links/orders-link",
     note="a custom resource with no mask rule: string values under credential-named keys are masked "
          "(credential-keys); secretName only refers to a Secret and stays")

CM_PW, CM_PW2 = rnd(16), rnd(16)
GH_PAT2 = "ghp_" + rnd(36)
cm_keys = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta("orders-env"),
           "data": {"DB_PASSWORD": CM_PW, "LOG_LEVEL": "info", "password": CM_PW2},
           "binaryData": {"gh.bin": b64(GH_PAT2 + "\n"), "logo.png": b64(bytes(range(0, 48)))}}
case("configmap-credential-keys", doc(cm_keys), [CM_PW, CM_PW2, b64(GH_PAT2 + "\n")], detectors=True,
     target="/api/v1/namespaces/dev/configmaps/orders-env",
     note="ConfigMap data under credential-named keys (what envFrom makes an env var) is masked; binaryData is "
          "decoded for the detectors and a value holding a token is replaced whole")

ENV_DUP = rnd(16)
env_dup = ('{"kind":"Pod","apiVersion":"v1","metadata":{"name":"dup","namespace":"dev"},"spec":{"containers":'
           '[{"name":"app","image":"app:1","env":[{"name":"API_KEY","value":"' + ENV_DUP + '","name":"HARMLESS"}]}]}}\n')
case("env-duplicate-name", env_dup, [ENV_DUP], target="/api/v1/namespaces/dev/pods/dup",
     note="an env entry with `name` twice is judged by the strictest reading: its value is masked")

AGG = rnd(16)
agg_list = ('{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},"items":[{"kind":"Secret",'
            '"apiVersion":"v1","metadata":{"name":"s","namespace":"dev"},"data":{"p":"' + b64(AGG) + '"}}]}\n')
case("aggregated-list-secret-item", agg_list, [AGG, b64(AGG)], target="/apis/metrics.k8s.io/v1beta1/namespaces/dev/pods",
     error="malformed",
     note="a Secret item in a PodMetricsList contradicts its list's item kind: the response ends before its data")

with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
    json.dump(cases, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"{len(cases)} cases")
