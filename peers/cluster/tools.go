//go:build tools

// Package tools pins the ipfs-cluster commands so `go mod tidy` keeps their dependencies.
package tools

import (
	_ "github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-ctl"
	_ "github.com/ipfs-cluster/ipfs-cluster/cmd/ipfs-cluster-service"
)
