#!/usr/bin/env bash
# Build (once) a Go tool the packaging uses, from the Go module proxy, at the version this
# module pins (go.mod's `tool` lines and go.sum): crane (go-containerregistry, OCI images without
# a Docker daemon) or helm (the chart's lint, template and install checks).
#
#   deploy/tools/build.sh crane|helm     # prints the binary's path on stdout
#
# Cached under ${KUBELEASH_TOOLS_CACHE:-$HOME/.cache/kubeleash/tools}/<go.sum's hash>/NAME, so a
# second run is instant and a change of pins builds again. Progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name=${1:?usage: deploy/tools/build.sh crane|helm}
case "$name" in
	crane) pkg=github.com/google/go-containerregistry/cmd/crane ;;
	helm) pkg=helm.sh/helm/v4/cmd/helm ;;
	*) echo "deploy/tools/build.sh: error: no tool \`$name\` (crane or helm)" >&2; exit 2 ;;
esac
command -v go >/dev/null || { echo "deploy/tools/build.sh: error: go is not installed; install Go >= 1.26" >&2; exit 1; }
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
out="${KUBELEASH_TOOLS_CACHE:-$HOME/.cache/kubeleash/tools}/$key/$name"
if [[ ! -x "$out" ]]; then
	mkdir -p "$(dirname "$out")"
	start=$SECONDS
	echo "deploy/tools/build.sh: building $name ($pkg) -> $out; the first time takes a minute or two" >&2
	tmp="$out.tmp.$$"
	if ! (cd "$here" && GOFLAGS=-mod=readonly go build -trimpath -o "$tmp" "$pkg") >&2; then
		rm -f "$tmp"
		echo "deploy/tools/build.sh: error: go build of $pkg failed; see the output above" >&2
		exit 1
	fi
	mv -f "$tmp" "$out"
	echo "deploy/tools/build.sh: built $name in $((SECONDS - start))s" >&2
fi
echo "$out"
