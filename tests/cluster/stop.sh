#!/usr/bin/env bash
# Stop the cluster start.sh started in DIR: kube-apiserver, then etcd (TERM, up to 15 s, then
# KILL). Idempotent; leaves DIR (logs, data) for the caller to remove.
#
#   tests/cluster/stop.sh DIR
set -euo pipefail

die() {
	echo "tests/cluster/stop.sh: error: $*" >&2
	exit 1
}
log() { echo "tests/cluster/stop.sh: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: stop.sh DIR (the directory given to start.sh)"
[[ -d "$1" ]] || die "$1 is not a directory"
dir="$(cd "$1" && pwd)"
timeout="${KUBELEASH_CLUSTER_STOP_TIMEOUT:-15}"

# ours PID: the process is alive and is one start.sh started in DIR (its command line names DIR),
# so a recycled pid is never signalled.
ours() {
	local pid="$1"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/"
}

# stop NAME: the pid in DIR/NAME.pid.
stop() {
	local name="$1" file="$dir/$1.pid" pid i
	[[ -f "$file" ]] || return 0
	pid="$(cat "$file")"
	if ! ours "$pid"; then
		rm -f "$file"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		ours "$pid" || break
		# a zombie (exited, not yet reaped by its parent) counts as stopped
		[[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
		sleep 0.1
	done
	if ours "$pid" && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; then
		log "$name (pid $pid) did not stop on TERM within ${timeout}s; sending KILL"
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			ours "$pid" || break
			[[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
			sleep 0.1
		done
	fi
	# until its parent (often init) reaps it, an exited process still shows in ps and pgrep
	for ((i = 0; i < 30; i++)); do
		[[ -e "/proc/$pid" ]] || break
		sleep 0.1
	done
	rm -f "$file"
}

# The watcher first, so it does not run stop.sh again while this one runs.
if [[ -f "$dir/watcher.pid" ]]; then
	wpid="$(cat "$dir/watcher.pid")"
	if [[ "$wpid" =~ ^[0-9]+$ && "$wpid" != "$PPID" && "$wpid" != "$$" ]]; then
		# the watcher is a subshell of start.sh (it also exits by itself within 1 s of env going)
		if [[ -r "/proc/$wpid/cmdline" ]] && tr '\0' ' ' <"/proc/$wpid/cmdline" | grep -qF -- "start.sh"; then
			kill -TERM "$wpid" 2>/dev/null || true
		fi
	fi
	rm -f "$dir/watcher.pid"
fi
rm -f "$dir/env"
stop kube-apiserver
stop etcd
for name in kube-apiserver etcd; do
	[[ ! -f "$dir/$name.pid" ]] || die "could not stop $name (pid $(cat "$dir/$name.pid"))"
done
log "stopped the cluster in $dir"
