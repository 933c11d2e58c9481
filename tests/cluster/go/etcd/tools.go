//go:build tools

// Package tools pins the etcd server used by tests/cluster (see ../../README.md).
// tests/cluster/build.sh builds the main package go.etcd.io/etcd/server/v3.
package tools

import _ "go.etcd.io/etcd/server/v3"
