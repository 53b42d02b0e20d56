// Package tufrepo owns the server's TUF repository: creating it, keeping the
// online snapshot and timestamp roles signed, accepting firmware that a
// publisher signed offline, and serving the files to any conformant TUF client.
//
// The repository holds only the online keys (snapshot, timestamp): it cannot
// add or change a target by itself (threat A12). Consistent snapshots are on,
// so every file but timestamp.json is immutable once written, and a publish
// becomes visible only when timestamp.json is atomically replaced: a crash at
// any point leaves the previous consistent state (DESIGN.md §2).
//
// Layout under the repository directory:
//
//	metadata/<version>.<role>.json   root, targets, delegated roles, snapshot
//	metadata/timestamp.json
//	targets/<dir>/<sha256>.<name>    target files, hash-prefixed
//	staging/                         uploads in progress
//
// Target files go through a gocloud.dev/blob bucket under the key
// <dir>/<sha256>.<name>: by default targets/ itself (fileblob), or any
// bucket WithTargetsBucket gives, such as an S3-compatible server's
// (targets.go). Metadata and staging always stay on the local disk.
package tufrepo

import (
	"path/filepath"
	"strconv"
	"strings"
)

const (
	metadataDir = "metadata"
	targetsDir  = "targets"
	stagingDir  = "staging"
)

func metaName(role string, version int64) string {
	return strconv.FormatInt(version, 10) + "." + role + ".json"
}

// targetFileName maps a target path to its hash-prefixed location relative to
// targets/, as the TUF specification and go-tuf's updater expect.
func targetFileName(path, sha256hex string) string {
	dir, base := filepath.Split(path)
	return dir + sha256hex + "." + base
}

// safeRel reports whether p is a clean relative slash path that stays inside
// its root.
func safeRel(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.Contains(p, "\x00") {
		return false
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}
