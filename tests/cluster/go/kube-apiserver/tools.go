//go:build tools

// Package tools pins the kube-apiserver used by tests/cluster (see ../../README.md).
// tests/cluster/build.sh builds k8s.io/kubernetes/cmd/kube-apiserver from this module.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
