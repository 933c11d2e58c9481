#!/usr/bin/env bash
# Start a real etcd + kube-apiserver on loopback, seeded like the sandbox, for tests.
#
#   dir="$(mktemp -d)"
#   tests/cluster/start.sh "$dir"     # prints the lines of $dir/env on stdout
#   source "$dir/env"; kubectl --kubeconfig "$KUBECONFIG_OPERATOR_CERT" get pods -A
#   tests/cluster/stop.sh "$dir"
#
# DIR must exist and be empty-ish (the caller owns it; everything is written under it). On any
# failure both servers are stopped before this script exits non-zero. Environment:
#   KUBELEASH_CLUSTER_CACHE          where build.sh caches the binaries
#   KUBELEASH_CLUSTER_READY_TIMEOUT  seconds to wait for /readyz (default 60)
#   KUBELEASH_CLUSTER_OWNER_PID      if set, a watcher runs stop.sh DIR once that process is gone
#   KUBELEASH_CLUSTER_NO_SEED=1      skip seed.yaml (the operator RBAC is still applied)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() {
	echo "tests/cluster/start.sh: error: $*" >&2
	exit 1
}
log() { echo "tests/cluster/start.sh: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: start.sh DIR (an existing directory the caller owns, e.g. \$(mktemp -d))"
[[ -d "$1" ]] || die "$1 is not a directory; create it first (e.g. mktemp -d)"
dir="$(cd "$1" && pwd)"
[[ ! -e "$dir/env" ]] || die "$dir/env exists: a cluster was already started in $dir; run stop.sh $dir and use a fresh directory"
for tool in openssl python3 curl kubectl; do
	command -v "$tool" >/dev/null || die "$tool is not installed; start.sh needs openssl, python3, curl and kubectl"
done
ready_timeout="${KUBELEASH_CLUSTER_READY_TIMEOUT:-60}"
t0=$SECONDS

# --- binaries ---------------------------------------------------------------------------------
paths="$("$here/build.sh")" || die "build.sh failed"
KUBE_APISERVER="$(sed -n 's/^KUBE_APISERVER=//p' <<<"$paths")"
ETCD="$(sed -n 's/^ETCD=//p' <<<"$paths")"
[[ -x "$KUBE_APISERVER" && -x "$ETCD" ]] || die "build.sh did not print usable paths: $paths"

# --- processes, and stopping them if anything below fails --------------------------------------
etcd_pid=""
apiserver_pid=""
watcher_pid=""

# stop_pid PID NAME: TERM, wait up to 10 s, then KILL.
stop_pid() {
	local pid="$1" name="$2" i
	[[ -n "$pid" ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name (pid $pid) did not stop on TERM within 10s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

on_exit() {
	local rc=$?
	if ((rc != 0)); then
		log "failed (exit $rc); stopping what was started (logs stay in $dir)"
		stop_pid "$watcher_pid" watcher
		stop_pid "$apiserver_pid" kube-apiserver
		stop_pid "$etcd_pid" etcd
		rm -f "$dir/env" "$dir/env.tmp" "$dir/kube-apiserver.pid" "$dir/etcd.pid" "$dir/watcher.pid"
	fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_ports N: N distinct free loopback TCP ports (held open together while choosing).
free_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- PKI ---------------------------------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki"
# (a failing openssl ends the subshell and, through set -e, this script)
(
	cd "$pki"
	key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
	key ca.key
	openssl req -x509 -new -key ca.key -subj "/CN=kubeleash-test-ca" -days 3650 -out ca.crt \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
	# leaf NAME SUBJECT EXTENSIONS
	leaf() {
		key "$1.key"
		printf '[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$3" >"$1.ext"
		openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
			-days 365 -extfile "$1.ext" -extensions v3 -out "$1.crt" 2>/dev/null
		rm -f "$1.csr" "$1.ext"
	}
	leaf apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
	leaf admin "/O=system:masters/CN=kubeleash-admin" "extendedKeyUsage=clientAuth"
	leaf operator "/O=kubeleash-operators/CN=kubeleash-operator" "extendedKeyUsage=clientAuth"
	key sa.key
	openssl pkey -in sa.key -pubout -out sa.pub
	chmod 600 ./*.key
)

operator_token="$(openssl rand -hex 24)"
admin_token="$(openssl rand -hex 24)"
# token,user,uid,"groups"
cat >"$pki/tokens.csv" <<EOF
$operator_token,kubeleash-operator,kubeleash-operator,"kubeleash-operators"
$admin_token,kubeleash-admin,kubeleash-admin,"system:masters"
EOF
chmod 600 "$pki/tokens.csv"

# --- etcd --------------------------------------------------------------------------------------
# A port can be taken between choosing it and binding it: retry with fresh ports.
for attempt in 1 2 3; do
	read -r etcd_port peer_port < <(free_ports 2)
	etcd_url="http://127.0.0.1:$etcd_port"
	rm -rf "$dir/etcd"
	"$ETCD" --name=kubeleash --data-dir="$dir/etcd" \
		--listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
		--listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-cluster="kubeleash=http://127.0.0.1:$peer_port" --initial-cluster-state=new \
		--unsafe-no-fsync --log-level=warn --logger=zap --log-outputs=stderr \
		</dev/null >"$dir/etcd.log" 2>&1 &
	etcd_pid=$!
	echo "$etcd_pid" >"$dir/etcd.pid"
	healthy=""
	for ((i = 0; i < 300; i++)); do
		kill -0 "$etcd_pid" 2>/dev/null || break
		if curl -fsS --max-time 2 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"'; then
			healthy=1
			break
		fi
		sleep 0.1
	done
	[[ -n "$healthy" ]] && break
	if kill -0 "$etcd_pid" 2>/dev/null; then
		tail -n 20 "$dir/etcd.log" >&2
		die "etcd (pid $etcd_pid) did not become healthy at $etcd_url within 30s; log: $dir/etcd.log"
	fi
	wait "$etcd_pid" 2>/dev/null || true
	etcd_pid=""
	if grep -q "address already in use" "$dir/etcd.log" && ((attempt < 3)); then
		log "etcd port taken, retrying with other ports"
		continue
	fi
	tail -n 20 "$dir/etcd.log" >&2
	die "etcd exited during start; log: $dir/etcd.log"
done

# --- kube-apiserver ----------------------------------------------------------------------------
issuer="https://kubernetes.default.svc.cluster.local"
for attempt in 1 2 3; do
	read -r api_port < <(free_ports 1)
	server="https://127.0.0.1:$api_port"
	"$KUBE_APISERVER" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
		--service-account-issuer="$issuer" --service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--authorization-mode=Node,RBAC --anonymous-auth=true \
		--etcd-servers="$etcd_url" --service-cluster-ip-range=10.96.0.0/12 \
		--endpoint-reconciler-type=none --allow-privileged=true --profiling=false --cert-dir="$pki/generated" --v=1 \
		</dev/null >"$dir/kube-apiserver.log" 2>&1 &
	apiserver_pid=$!
	echo "$apiserver_pid" >"$dir/kube-apiserver.pid"
	ready=""
	deadline=$((SECONDS + ready_timeout))
	while ((SECONDS < deadline)); do
		kill -0 "$apiserver_pid" 2>/dev/null || break
		if [[ "$(curl -sS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$server/readyz" 2>/dev/null)" == ok ]]; then
			ready=1
			break
		fi
		sleep 0.2
	done
	[[ -n "$ready" ]] && break
	if kill -0 "$apiserver_pid" 2>/dev/null; then
		tail -n 30 "$dir/kube-apiserver.log" >&2
		die "kube-apiserver (pid $apiserver_pid) was not ready at $server/readyz within ${ready_timeout}s; log: $dir/kube-apiserver.log"
	fi
	wait "$apiserver_pid" 2>/dev/null || true
	apiserver_pid=""
	if grep -q "address already in use" "$dir/kube-apiserver.log" && ((attempt < 3)); then
		log "kube-apiserver port taken, retrying with another port"
		continue
	fi
	tail -n 30 "$dir/kube-apiserver.log" >&2
	die "kube-apiserver exited during start; log: $dir/kube-apiserver.log"
done
ready_after=$((SECONDS - t0))

# --- kubeconfigs -------------------------------------------------------------------------------
b64() { base64 -w0 <"$1"; }
ca_data="$(b64 "$pki/ca.crt")"
# kubeconfig FILE CONTEXT_USER then the `user:` body on stdin (indented 4 spaces).
kubeconfig() {
	{
		cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeleash-test
  cluster:
    server: $server
    certificate-authority-data: $ca_data
contexts:
- name: $2
  context:
    cluster: kubeleash-test
    user: $2
    namespace: default
current-context: $2
users:
- name: $2
  user:
EOF
		cat
	} >"$1"
	chmod 600 "$1"
}
kubeconfig "$dir/admin.kubeconfig" kubeleash-admin <<EOF
    client-certificate-data: $(b64 "$pki/admin.crt")
    client-key-data: $(b64 "$pki/admin.key")
EOF
kubeconfig "$dir/operator-cert.kubeconfig" kubeleash-operator <<EOF
    client-certificate-data: $(b64 "$pki/operator.crt")
    client-key-data: $(b64 "$pki/operator.key")
EOF
kubeconfig "$dir/operator-token.kubeconfig" kubeleash-operator <<EOF
    token: $operator_token
EOF
cat >"$dir/operator-exec-credential.sh" <<EOF
#!/bin/sh
# An exec credential plugin for kubectl/client-go: prints the operator's static token.
printf '%s\n' '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"$operator_token"}}'
EOF
chmod 700 "$dir/operator-exec-credential.sh"
kubeconfig "$dir/operator-exec.kubeconfig" kubeleash-operator <<EOF
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: $dir/operator-exec-credential.sh
      interactiveMode: Never
      provideClusterInfo: false
EOF

# --- seed and operator RBAC ----------------------------------------------------------------------
export KUBECACHEDIR="$dir/kube-cache"
admin=(kubectl --kubeconfig "$dir/admin.kubeconfig" --request-timeout=30s)
if [[ "${KUBELEASH_CLUSTER_NO_SEED:-}" != 1 ]]; then
	# seed.yaml documents say `# manager: NAME`; runs of documents with the same manager are
	# created with `kubectl create --field-manager NAME`, in file order, and those of manager
	# kubectl-client-side-apply with `kubectl apply` (so they carry the last-applied annotation).
	mkdir -p "$dir/seed"
	python3 - "$here/seed.yaml" "$dir/seed" <<'EOF' || die "cannot split seed.yaml"
import re, sys, os
text = open(sys.argv[1]).read()
docs = [d for d in re.split(r"(?m)^---[ \t]*$", text) if re.search(r"(?m)^kind:", d)]
batches = []
for d in docs:
    m = re.search(r"(?m)^# manager: *(\S+)", d)
    manager = m.group(1) if m else "kubectl-create"
    if batches and batches[-1][0] == manager:
        batches[-1][1].append(d)
    else:
        batches.append((manager, [d]))
for i, (manager, ds) in enumerate(batches):
    with open(os.path.join(sys.argv[2], f"{i:02d}-{manager}.yaml"), "w") as f:
        f.write("\n---\n".join(ds))
EOF
	for f in "$dir"/seed/*.yaml; do
		manager="$(basename "$f" .yaml)"
		manager="${manager#*-}"
		if [[ "$manager" == kubectl-client-side-apply ]]; then
			"${admin[@]}" apply -f "$f" >>"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "applying $f failed"; }
		else
			"${admin[@]}" create --field-manager="$manager" -f "$f" >>"$dir/seed.log" 2>&1 || { cat "$dir/seed.log" >&2; die "creating $f failed"; }
		fi
		if grep -q '^kind: CustomResourceDefinition' "$f"; then
			"${admin[@]}" wait --for=condition=Established crd --all --timeout=30s >>"$dir/seed.log" 2>&1 ||
				{ cat "$dir/seed.log" >&2; die "the seed's CRDs did not become Established"; }
		fi
	done
else
	# the operator's RoleBindings live in dev and prod
	"${admin[@]}" create namespace dev >>"$dir/seed.log" 2>&1 || die "creating namespace dev failed"
	"${admin[@]}" create namespace prod >>"$dir/seed.log" 2>&1 || die "creating namespace prod failed"
fi
"${admin[@]}" create -f "$here/operator-rbac.yaml" >>"$dir/seed.log" 2>&1 || {
	cat "$dir/seed.log" >&2
	die "applying operator-rbac.yaml failed"
}

# --- optional watcher, env -----------------------------------------------------------------------
if [[ -n "${KUBELEASH_CLUSTER_OWNER_PID:-}" ]]; then
	owner="$KUBELEASH_CLUSTER_OWNER_PID"
	kill -0 "$owner" 2>/dev/null || die "KUBELEASH_CLUSTER_OWNER_PID=$owner is not a running process"
	(
		trap - EXIT INT TERM
		while kill -0 "$owner" 2>/dev/null && [[ -e "$dir/env" ]]; do sleep 1; done
		[[ -e "$dir/env" ]] && exec "$here/stop.sh" "$dir"
	) </dev/null >>"$dir/watcher.log" 2>&1 &
	watcher_pid=$!
	echo "$watcher_pid" >"$dir/watcher.pid"
fi

{
	printf '%s=%q\n' \
		KUBELEASH_CLUSTER_DIR "$dir" \
		KUBELEASH_CLUSTER_SERVER "$server" \
		KUBELEASH_CLUSTER_CA "$pki/ca.crt" \
		KUBECONFIG_ADMIN "$dir/admin.kubeconfig" \
		KUBECONFIG_OPERATOR_CERT "$dir/operator-cert.kubeconfig" \
		KUBECONFIG_OPERATOR_TOKEN "$dir/operator-token.kubeconfig" \
		KUBECONFIG_OPERATOR_EXEC "$dir/operator-exec.kubeconfig" \
		KUBELEASH_CLUSTER_OPERATOR_USER kubeleash-operator \
		KUBELEASH_CLUSTER_OPERATOR_TOKEN "$operator_token" \
		KUBELEASH_CLUSTER_ADMIN_TOKEN "$admin_token" \
		KUBELEASH_CLUSTER_ETCD_URL "$etcd_url" \
		KUBE_APISERVER_PID "$apiserver_pid" \
		ETCD_PID "$etcd_pid" \
		KUBELEASH_CLUSTER_WATCHER_PID "$watcher_pid" \
		KUBE_APISERVER "$KUBE_APISERVER" \
		ETCD "$ETCD"
} >"$dir/env.tmp"
mv "$dir/env.tmp" "$dir/env"
trap - EXIT INT TERM
log "ready at $server after ${ready_after}s (seeded after $((SECONDS - t0))s); source $dir/env; stop with tests/cluster/stop.sh $dir"
cat "$dir/env"
