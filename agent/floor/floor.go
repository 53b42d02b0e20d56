// Package floor owns the anti-rollback floor: the lowest firmware version
// this phone may ever install again, raised each time an image commits.
//
// On a phone the floor lives in a TPM NV index written with owner
// authorization, so restoring an old copy of the agent's state directory
// (or the whole disk) cannot lower it. Without a TPM it lives in the state
// directory, which resists nothing but mistakes; the agent then reports
// itself as insecure-floor.
package floor

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/dialtone-dev/dialtone/agent/tpm"
	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"golang.org/x/mod/semver"
)

// DefaultIndex is the TPM NV index of the floor, in the owner range.
const DefaultIndex = 0x01500D70

// ErrVersion means a version the floor cannot hold.
var ErrVersion = errors.New("bad floor version")

// Version is a release version the floor can hold: MAJOR.MINOR.PATCH.
type Version struct{ Major, Minor, Patch uint32 }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Less orders versions.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// Limits of the TPM encoding: 16 bits of major, 24 of minor and patch.
const (
	maxMajor = 1<<16 - 1
	maxMinor = 1<<24 - 1
)

// Parse reads a release version. A pre-release ("1.3.0-rc1") is below its
// release and does not raise the floor: ok is false and err nil.
func Parse(s string) (v Version, ok bool, err error) {
	sv := "v" + s
	if !semver.IsValid(sv) || strings.Count(s, ".") < 2 {
		return Version{}, false, fmt.Errorf("%w %q: want MAJOR.MINOR.PATCH", ErrVersion, s)
	}
	if semver.Prerelease(sv) != "" {
		return Version{}, false, nil
	}
	core, _, _ := strings.Cut(strings.TrimPrefix(semver.Canonical(sv), "v"), "+")
	parts := strings.SplitN(core, ".", 3)
	var n [3]uint64
	for i, p := range parts {
		if n[i], err = strconv.ParseUint(p, 10, 32); err != nil {
			return Version{}, false, fmt.Errorf("%w %q: %v", ErrVersion, s, err)
		}
	}
	if n[0] > maxMajor || n[1] > maxMinor || n[2] > maxMinor {
		return Version{}, false, fmt.Errorf("%w %q: too large for the floor's encoding", ErrVersion, s)
	}
	return Version{uint32(n[0]), uint32(n[1]), uint32(n[2])}, true, nil
}

func encode(v Version) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], uint16(v.Major))
	b[2], b[3], b[4] = byte(v.Minor>>16), byte(v.Minor>>8), byte(v.Minor)
	b[5], b[6], b[7] = byte(v.Patch>>16), byte(v.Patch>>8), byte(v.Patch)
	return b
}

func decode(b []byte) Version {
	return Version{
		Major: uint32(binary.BigEndian.Uint16(b[0:2])),
		Minor: uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]),
		Patch: uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]),
	}
}

// TPM keeps the floor in a TPM NV index.
type TPM struct{ nv *tpm.NVSpace }

// NewTPM returns the floor kept in nv.Index of t, defining the index when
// the phone has none yet.
func NewTPM(nv *tpm.NVSpace) (*TPM, error) {
	nv.Size = 8
	if err := nv.Define(); err != nil {
		return nil, fmt.Errorf("anti-rollback floor: %w", err)
	}
	return &TPM{nv: nv}, nil
}

// Get returns the floor; a floor never raised is 0.0.0.
func (f *TPM) Get(context.Context) (Version, error) {
	b, err := f.nv.Read()
	if errors.Is(err, tpm.ErrNVUndefined) {
		return Version{}, nil
	}
	if err != nil {
		return Version{}, fmt.Errorf("reading anti-rollback floor: %w", err)
	}
	return decode(b), nil
}

// Raise lifts the floor to v; a v at or below the floor changes nothing.
func (f *TPM) Raise(ctx context.Context, v Version) error {
	cur, err := f.Get(ctx)
	if err != nil {
		return err
	}
	if !cur.Less(v) {
		return nil
	}
	if err := f.nv.Write(encode(v)); err != nil {
		return fmt.Errorf("raising anti-rollback floor to %s: %w", v, err)
	}
	return nil
}

// Secure reports that the floor resists a restored state directory.
func (f *TPM) Secure() bool { return true }

// File keeps the floor in a file of the state directory.
type File struct{ path string }

// NewFile returns the floor kept in path.
func NewFile(path string) *File { return &File{path: path} }

type fileFloor struct {
	Version string `json:"version"`
}

// Get returns the floor; a missing file is 0.0.0.
func (f *File) Get(context.Context) (Version, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Version{}, nil
	}
	if err != nil {
		return Version{}, fmt.Errorf("reading anti-rollback floor: %w", err)
	}
	var ff fileFloor
	if err := json.Unmarshal(b, &ff); err != nil {
		return Version{}, fmt.Errorf("parsing anti-rollback floor %s: %w", f.path, err)
	}
	v, ok, err := Parse(ff.Version)
	if err != nil || !ok {
		return Version{}, fmt.Errorf("anti-rollback floor %s holds %q: %w", f.path, ff.Version, ErrVersion)
	}
	return v, nil
}

// Raise lifts the floor to v; a v at or below the floor changes nothing.
func (f *File) Raise(ctx context.Context, v Version) error {
	cur, err := f.Get(ctx)
	if err != nil {
		return err
	}
	if !cur.Less(v) {
		return nil
	}
	b, _ := json.Marshal(fileFloor{Version: v.String()})
	if err := atomicfile.WriteFile(f.path, b, 0o600); err != nil {
		return fmt.Errorf("raising anti-rollback floor: %w", err)
	}
	return nil
}

// Secure reports false: a file in the state directory is restored with it.
func (f *File) Secure() bool { return false }
