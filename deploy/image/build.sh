#!/usr/bin/env bash
# Build the kubeleash container image without a Docker daemon, with crane (go-containerregistry,
# from the Go module proxy), and check it: the same files as `docker build .` (both lay them out
# with deploy/image/rootfs.sh) and the USER, ENTRYPOINT, CMD and LABELs the Dockerfile states
# (read from it, so they are stated once).
#
#   deploy/image/build.sh [OUT]     # OUT: an OCI image layout, default target/image/kubeleash-oci
#
# KUBELEASH_IMAGE_PROFILE=debug puts the debug binary in it instead of a release build (what CI
# does, to stay within its time).
#
# crane needs a registry to build in: `crane registry serve` on loopback, in memory, gone when
# this script ends. What is checked: the config (entrypoint, user, labels, platform), that the
# image holds no shell, that every file is root's, and that the binary runs from the image's own
# files alone (`kubeleash --version`, in a chroot when run as root, else through the image's own
# loader with only its libraries). Push the layout anywhere with `crane push OUT REF`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
out=${1:-$repo/target/image/kubeleash-oci}
work=$repo/target/image/work
die() { echo "deploy/image/build.sh: error: $*" >&2; exit 1; }

crane=$(deploy/tools/build.sh crane)
# The platform is the binary's own (the image holds what this machine built).
case "$(uname -m)" in
	x86_64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) die "no image platform for this machine's $(uname -m)" ;;
esac

if [[ "${KUBELEASH_IMAGE_PROFILE:-release}" == debug ]]; then
	# CI checks the image's making with the debug binary its other stages already built: a
	# release build of the CLI alone is five minutes on two cores. The files, config and checks
	# are the same.
	echo "== image: the debug binary (KUBELEASH_IMAGE_PROFILE=debug: cargo build -p kubeleash-cli)"
	cargo build --quiet --locked -p kubeleash-cli
	bin=target/debug/kubeleash
else
	echo "== image: the release binary (cargo build --release -p kubeleash-cli)"
	# For the host triple, as the Python and Node bindings build: the three release builds
	# share the target directory, and this one compiles only what they do not.
	host=$(rustc -vV | sed -n 's/^host: //p')
	cargo build --quiet --release --locked -p kubeleash-cli --target "$host"
	bin=target/$host/release/kubeleash
fi
version=$("$bin" --version | awk '{ print $2 }')

echo "== image: the filesystem (deploy/image/rootfs.sh) and its one layer"
rm -rf "$work"
mkdir -p "$work"
deploy/image/rootfs.sh "$bin" "$work/rootfs"
# Reproducible: sorted, root-owned, one fixed time.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/rootfs" -cf "$work/layer.tar" .

# What the Dockerfile states, in crane's flags.
dockerfile=$repo/Dockerfile
user=$(sed -n 's/^USER \(.*\)$/\1/p' "$dockerfile")
entrypoint=$(sed -n 's/^ENTRYPOINT \["\(.*\)"\]$/\1/p' "$dockerfile")
cmd=$(sed -n 's/^CMD \["\(.*\)"\]$/\1/p' "$dockerfile")
[[ -n "$user" && -n "$entrypoint" && -n "$cmd" ]] || die "the Dockerfile has no USER, ENTRYPOINT [\"...\"] or CMD [\"...\"] line this script reads"
labels=()
while IFS= read -r l; do labels+=(--label "$l"); done < <(sed -n 's/^LABEL \([^=]*\)="\(.*\)"$/\1=\2/p' "$dockerfile")
[[ ${#labels[@]} -gt 0 ]] || die "the Dockerfile has no LABEL key=\"value\" lines"
labels+=(--label "org.opencontainers.image.version=$version")

echo "== image: build it in a loopback registry (crane registry serve, append, mutate)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$crane" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	"$crane" catalog --insecure "127.0.0.1:$port" >/dev/null 2>&1 && break
	sleep 0.1
done
ref="127.0.0.1:$port/kubeleash:$version"
"$crane" append --insecure --oci-empty-base --platform "linux/$arch" -f "$work/layer.tar" -t "$ref" >/dev/null
"$crane" mutate --insecure "$ref" -t "$ref" --set-platform "linux/$arch" --user "$user" \
	--entrypoint "$entrypoint" --cmd "$cmd" --workdir / "${labels[@]}" >/dev/null

echo "== image: check its config"
"$crane" config --insecure "$ref" >"$work/config.json"
python3 - "$work/config.json" "$user" "$entrypoint" "$cmd" "$version" "$dockerfile" "$arch" <<'EOF'
import json, re, sys
path, user, entrypoint, cmd, version, dockerfile, arch = sys.argv[1:]
config = json.load(open(path))
c = config.get("config", {})
want = {
    "os": (config.get("os"), "linux"),
    "architecture": (config.get("architecture"), arch),
    "User": (c.get("User"), user),
    "Entrypoint": (c.get("Entrypoint"), [entrypoint]),
    "Cmd": (c.get("Cmd"), [cmd]),
}
labels = dict(re.findall(r'^LABEL ([^=]+)="(.*)"$', open(dockerfile).read(), re.M))
labels["org.opencontainers.image.version"] = version
for k, v in labels.items():
    want[f"label {k}"] = ((c.get("Labels") or {}).get(k), v)
bad = {k: v for k, v in want.items() if v[0] != v[1]}
if bad:
    sys.exit(f"the image's config is not what the Dockerfile says: {bad}")
if c.get("User", "0").split(":")[0] in ("", "0", "root"):
    sys.exit("the image runs as root")
print(f"config: user {c['User']}, entrypoint {c['Entrypoint']}, {len(labels)} labels")
EOF

echo "== image: check its files, and that the binary runs from them alone"
rm -rf "$work/check"
mkdir -p "$work/check"
"$crane" export --insecure "$ref" - | tar -x -C "$work/check"
# Nothing executable but the binary and the libraries it loads: no shell, no tools.
extra=$(cd "$work/check" && find . -type f -perm -u+x ! -path ./kubeleash ! -name 'ld-linux*' ! -name '*.so*')
[[ -z "$extra" ]] || die "the image holds executables besides kubeleash: $extra"
[[ -x "$work/check/kubeleash" ]] || die "the image has no executable /kubeleash"
"$crane" export --insecure "$ref" - | tar -tv --numeric-owner | awk '$2 != "0/0" { print; bad = 1 } END { exit bad }' \
	|| die "files in the image are not root's (above)"
if [[ $(id -u) == 0 ]]; then
	ran=$(env -i "$(command -v chroot)" --userspec=65532:65532 "$work/check" /kubeleash --version)
else
	loader=$(cd "$work/check" && ls lib64/ld-linux-*.so.* | head -1)
	ran=$(env -i "$work/check/$loader" --library-path "$work/check/lib/x86_64-linux-gnu:$work/check/usr/lib/x86_64-linux-gnu" "$work/check/kubeleash" --version)
fi
[[ "$ran" == "kubeleash $version "* ]] || die "the image's binary printed \`$ran\`, not kubeleash $version"
echo "runs: $ran"

echo "== image: save it as an OCI layout"
rm -rf "$out"
"$crane" pull --insecure --format oci "$ref" "$out"
digest=$("$crane" digest --insecure "$ref")
size=$(python3 -c 'import json, sys; m = json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])' < <("$crane" manifest --insecure "$ref"))
echo "kubeleash:$version $digest, $((size / 1024 / 1024)) MiB compressed, in $out (push it with: crane push $out REGISTRY/kubeleash:$version)"
