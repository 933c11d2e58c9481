#!/usr/bin/env bash
# Lay out the kubeleash image's whole filesystem in DIR from a built binary: the binary at
# /kubeleash, the shared libraries it loads (and nothing else: no shell, no package manager), a
# nonroot user (65532, as distroless names it) and the CA bundle. The Dockerfile's build stage and
# the daemonless build (deploy/image/build.sh) both call this, so the two images hold the same
# files.
#
#   deploy/image/rootfs.sh BINARY DIR
set -euo pipefail
# The same modes whatever the caller's umask: the layer is reproducible.
umask 022
bin=${1:?usage: rootfs.sh BINARY DIR}
root=${2:?usage: rootfs.sh BINARY DIR}
rm -rf "$root"
mkdir -p "$root/etc/ssl/certs" "$root/tmp"
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/kubeleash"
strip --strip-unneeded "$root/kubeleash"
# Each library the loader resolves for the binary, at the path it resolves it to (symlinks
# followed, so the file itself is copied): `ldd` lists `name => /path (addr)` and the loader as
# `/path (addr)`; the vDSO has no file.
# A static binary loads nothing (and `ldd` says so, failing); a library the loader cannot find
# is an error, not a file named "not".
libs=$(ldd "$bin" 2>&1) || libs=""
if grep -q "not found" <<<"$libs"; then
	echo "deploy/image/rootfs.sh: error: $bin needs libraries this machine lacks:" >&2
	grep "not found" <<<"$libs" >&2
	exit 1
fi
awk '/=>/ { print $3; next } /^[ \t]*\// { print $1 }' <<<"$libs" | while read -r lib; do
	[ -n "$lib" ] || continue
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# Webhooks, chat relays and OIDC issuers are verified against the system's roots.
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
