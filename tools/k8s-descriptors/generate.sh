#!/usr/bin/env bash
# Regenerate what kubeleash's protobuf body decoder reads, in core/src/body/protobuf/:
# - kubernetes.binpb: the descriptors of Kubernetes' generated.proto files (k8s.io/api,
#   apimachinery, apiextensions-apiserver, kube-aggregator), compiled by protox;
# - kubernetes.names: from the Go types themselves (go/main.go), which message each apiVersion
#   and kind decodes as, and where JSON names a field differently from the proto file.
# Both come from the release tests/cluster pins (tests/cluster/go/kube-apiserver/go.mod), through
# the Go module proxy; go/go.mod pins the same versions. Run this after changing that pin, and
# commit the result.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mod="$repo/tests/cluster/go/kube-apiserver"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/k8s.io"
for m in api apimachinery apiextensions-apiserver kube-aggregator; do
	dir="$(cd "$mod" && go mod download -json "k8s.io/$m" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[[ -d "$dir" ]] || { echo "generate.sh: cannot download k8s.io/$m" >&2; exit 1; }
	ln -s "$dir" "$work/k8s.io/$m"
done
# Every API type's proto, but not the test groups (testapigroup) or the old meta/v1beta1.
files=()
while IFS= read -r f; do files+=("${f#"$work/"}"); done < <(
	find -L "$work/k8s.io" -name generated.proto \
		\( -path '*/k8s.io/api/*' -o -path '*/pkg/apis/meta/v1/*' -o -path '*/pkg/runtime/*' \
		-o -path '*/pkg/util/intstr/*' -o -path '*/pkg/api/resource/*' \
		-o -path '*/apiextensions/v1/*' -o -path '*/apiregistration/v1/*' \) | sort)
dir="$repo/core/src/body/protobuf"
out="$dir/kubernetes.binpb"
mkdir -p "$dir"
(cd "$repo/tools/k8s-descriptors/go" && GOFLAGS=-mod=readonly go run .) >"$dir/kubernetes.names"
cargo run --quiet --release --manifest-path "$repo/tools/k8s-descriptors/Cargo.toml" -- "$work" "$out" "${files[@]}"
ls -l "$out" >&2
