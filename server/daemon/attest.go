package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/mod/semver"

	"github.com/dialtone-dev/dialtone/internal/wire"
	"github.com/dialtone-dev/dialtone/server/alert"
	"github.com/dialtone-dev/dialtone/server/attest"
	"github.com/dialtone-dev/dialtone/server/devca"
	"github.com/dialtone-dev/dialtone/server/tufrepo"
)

// repoTargets is the repository as attestation's policy sees it.
type repoTargets struct{ r *tufrepo.Repo }

func (t repoTargets) TargetBySHA256(model, sha string) (attest.Target, bool) {
	f, ok := t.r.FirmwareBySHA256(model, sha)
	return attest.Target{Model: f.Model, Version: f.Version, Path: f.Path, Revoked: f.Revoked}, ok
}

// alertFunc raises alerts through the daemon's alert service.
type alertFunc func(alert.Alert)

func (f alertFunc) Raise(_ context.Context, a alert.Alert) error {
	f(a)
	return nil
}

// loadCAs reads the TPM manufacturers' CA certificates (PEM files, each
// one or more certificates): the EK certificate allowlist. Self-signed
// ones are roots, the others intermediates.
func loadCAs(files []string) (roots, inter *x509.CertPool, err error) {
	if len(files) == 0 {
		return nil, nil, nil
	}
	roots, inter = x509.NewCertPool(), x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--ek-ca: %w", err)
		}
		n := 0
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("--ek-ca %s: %w", f, err)
			}
			if c.CheckSignatureFrom(c) == nil {
				roots.AddCert(c)
			} else {
				inter.AddCert(c)
			}
			n++
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("--ek-ca %s: no PEM certificate", f)
		}
	}
	return roots, inter, nil
}

// newAttestation makes the attestation service. disconnect, when it is
// set by the time a verdict comes, takes an untrusted device off the
// embedded broker.
func newAttestation(o Options, st attest.Store, repo *tufrepo.Repo, ca *devca.CA, raise func(alert.Alert), disconnect *func(device, reason string), log *slog.Logger) (*attest.Service, error) {
	roots, inter, err := loadCAs(o.EKCAs)
	if err != nil {
		return nil, err
	}
	if err := checkMinimums(o.AttestMinimum); err != nil {
		return nil, err
	}
	if roots == nil {
		log.Warn("no --ek-ca: devices enroll only with an operator-approved EK (dialtone devices approve)")
	}
	return attest.NewService(attest.Options{Store: st, Targets: repoTargets{repo}, Roots: roots, Intermediates: inter,
		Period: o.AttestPeriod, PCR: o.AttestPCR, Minimum: o.AttestMinimum, Alerts: alertFunc(raise), Logger: log, CA: ca, CertTTL: o.DeviceCertTTL,
		OnVerdict: func(_ context.Context, _, device string, r attest.Result) {
			if r.Outcome == attest.Untrusted && *disconnect != nil {
				(*disconnect)(device, "attestation untrusted: "+r.Reason)
			}
		}})
}

// DevCADir is where the device CA lives in the data directory.
const DevCADir = "devca"

// checkMinimums refuses a fleet minimum that is not MODEL=MAJOR.MINOR.PATCH
// (a prerelease is allowed: it orders below its release).
func checkMinimums(m map[string]string) error {
	for model, v := range m {
		if !wire.ValidID(model) || !semver.IsValid("v"+v) || strings.Count(strings.SplitN(v, "-", 2)[0], ".") != 2 || strings.Contains(v, "+") {
			return fmt.Errorf("--attest-min-version %q=%q: want MODEL=MAJOR.MINOR.PATCH", model, v)
		}
	}
	return nil
}
