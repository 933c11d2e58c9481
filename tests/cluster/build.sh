#!/usr/bin/env bash
# Build (once) the real kube-apiserver and etcd that tests/cluster runs, from the Go module proxy.
#
#   tests/cluster/build.sh            # prints KUBE_APISERVER=<path> and ETCD=<path> on stdout
#   eval "$(tests/cluster/build.sh)"  # ... and sets them in the calling shell
#
# Versions are pinned by the modules in tests/cluster/go/{kube-apiserver,etcd} (go.mod + go.sum).
# Binaries are cached under ${KUBELEASH_CLUSTER_CACHE:-$HOME/.cache/kubeleash/cluster}/
# k8s-<version>/kube-apiserver and etcd-<version>/etcd; a cached binary that runs and reports the
# pinned version is reused, so a second run is instant. Progress goes to stderr, paths to stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KUBELEASH_CLUSTER_CACHE:-$HOME/.cache/kubeleash/cluster}"

die() {
	echo "tests/cluster/build.sh: error: $*" >&2
	exit 1
}
log() { echo "tests/cluster/build.sh: $*" >&2; }

# The version a module pins, read from its go.mod (no `go` needed on the instant path).
pinned() {
	local mod="$1" dep="$2" v
	v="$(awk -v dep="$dep" '($1 == "require" && $2 == dep) || ($1 == dep) { print ($1 == "require" ? $3 : $2); exit }' "$here/go/$mod/go.mod")"
	[[ -n "$v" ]] || die "cannot find the version of $dep in $here/go/$mod/go.mod"
	echo "$v"
}

k8s_version="$(pinned kube-apiserver k8s.io/kubernetes)"
etcd_version="$(pinned etcd go.etcd.io/etcd/server/v3)"
apiserver="$cache/k8s-$k8s_version/kube-apiserver"
etcd="$cache/etcd-$etcd_version/etcd"

# ok BINARY EXPECTED: the binary exists, runs, and `--version` mentions EXPECTED.
ok() {
	[[ -x "$1" ]] || return 1
	local out
	out="$("$1" --version 2>&1)" || return 1
	[[ "$out" == *"$2"* ]]
}

# build MODULE_DIR PACKAGE OUTPUT LDFLAGS: go build into a temp file next to OUTPUT, then rename.
build() {
	local dir="$1" pkg="$2" out="$3" ldflags="$4" tmp start
	command -v go >/dev/null || die "go is not installed; install Go >= 1.26 (see tests/cluster/README.md)"
	mkdir -p "$(dirname "$out")"
	tmp="$out.tmp.$$"
	start=$SECONDS
	log "building $pkg (from $dir) -> $out; this takes minutes the first time"
	if ! (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$tmp" "$pkg") >&2; then
		rm -f "$tmp"
		die "go build of $pkg failed (module $dir); see the output above"
	fi
	mv -f "$tmp" "$out"
	log "built $out in $((SECONDS - start))s"
}

mkdir -p "$cache"
# One builder at a time per cache dir (a second caller waits, then finds the binaries built).
if command -v flock >/dev/null; then
	exec 9>"$cache/.lock"
	flock 9 || die "cannot lock $cache/.lock"
fi

k8s_minor="${k8s_version#v}"
k8s_minor="${k8s_minor#*.}"
k8s_minor="${k8s_minor%%.*}"
if ! ok "$apiserver" "Kubernetes $k8s_version"; then
	vpkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
	ldflags="-s -w"
	for p in "${vpkgs[@]}"; do
		ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean"
	done
	build "$here/go/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$apiserver" "$ldflags"
	ok "$apiserver" "Kubernetes $k8s_version" || die "$apiserver was built but \`--version\` does not say Kubernetes $k8s_version"
fi

if ! ok "$etcd" "etcd Version: ${etcd_version#v}"; then
	build "$here/go/etcd" go.etcd.io/etcd/server/v3 "$etcd" "-s -w"
	ok "$etcd" "etcd Version: ${etcd_version#v}" || die "$etcd was built but \`--version\` does not say etcd Version: ${etcd_version#v}"
fi

echo "KUBE_APISERVER=$apiserver"
echo "ETCD=$etcd"
