package tufrepo

import (
	"bytes"
	"encoding/hex"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Firmware is what the repository says of a bundle digest, for attestation:
// the bundle a phone measured is judged by it.
type Firmware struct {
	Model, Version, Path string
	// Revoked: the bundle was a target and was removed by a revocation.
	Revoked bool
}

// FirmwareBySHA256 finds the firmware bundle of model whose SHA-256 is
// sha256hex among the current targets, then among the revoked ones. A
// bundle that is neither was never published here (or was removed before
// revocations recorded digests) and is not found.
func (r *Repo) FirmwareBySHA256(model, sha256hex string) (Firmware, bool) {
	want, err := hex.DecodeString(sha256hex)
	if err != nil || len(want) != 32 {
		return Firmware{}, false
	}
	st := r.current()
	if f, ok := findFirmware(st.targets.Signed.Targets, model, want); ok {
		return f, true
	}
	for _, d := range st.delegated {
		if f, ok := findFirmware(d.Signed.Targets, model, want); ok {
			return f, true
		}
	}
	revs, err := r.Revocations()
	if err != nil {
		r.log.Warn("reading revocations for an attestation", "error", err)
		return Firmware{}, false
	}
	for _, rv := range revs {
		if rv.Model == model && strings.EqualFold(rv.SHA256, sha256hex) {
			return Firmware{Model: rv.Model, Version: rv.Version, Path: rv.Target, Revoked: true}, true
		}
	}
	return Firmware{}, false
}

func findFirmware(targets map[string]*metadata.TargetFiles, model string, sha []byte) (Firmware, bool) {
	for p, tf := range targets {
		if strings.HasSuffix(p, ".sig") || !bytes.Equal(tf.Hashes["sha256"], sha) {
			continue
		}
		c, err := decodeCustom(tf)
		if err != nil || c.Model != model {
			continue
		}
		return Firmware{Model: c.Model, Version: c.Version, Path: p}, true
	}
	return Firmware{}, false
}
