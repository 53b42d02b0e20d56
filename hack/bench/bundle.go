package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/keys"
)

const (
	benchModel    = "benchphone"
	benchVersion  = "1.0.0"
	benchHardware = "rev-a"
)

// writeRandomFile writes size bytes of seeded pseudo-random data: nothing
// along the way can compress or deduplicate it.
func writeRandomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'d', 'i', 'a', 'l', 't', 'o', 'n', 'e'})
	if _, err := io.Copy(f, io.LimitReader(rng, size)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sha256sum runs sha256sum on path and checks its output names the file.
func sha256sum(path string) (time.Duration, string, error) {
	d, _, out, err := runTimed(os.Environ(), "sha256sum", path)
	if err != nil {
		return d, "", err
	}
	sum, name, ok := strings.Cut(strings.TrimSpace(out), "  ")
	if !ok || name != path || len(sum) != 64 {
		return d, "", fmt.Errorf("unexpected sha256sum output %q", out)
	}
	return d, sum, nil
}

// goSHA256 hashes path in this process as firmware does (crypto/sha256,
// 1 MiB reads): what the same hash costs without coreutils' implementation.
func goSHA256(path string) (time.Duration, string, error) {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, 1<<20)); err != nil {
		return 0, "", err
	}
	return time.Since(t0), fmt.Sprintf("%x", h.Sum(nil)), nil
}

func mibps(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }

// benchBundle times building and verifying a bundle of one cfg.bundleMiB
// payload with the CLI, against sha256sum of the file each one reads:
// the payload for build, the bundle for verify. It returns the bundle (and
// its .sig, signed with a throw-away key) for the publish benchmark.
func benchBundle(cfg config, dir string) ([]row, string, error) {
	size := int64(cfg.bundleMiB) << 20
	logf("== bundle: build and verify a %d MiB bundle, %d interleaved rounds, against sha256sum of the same file", cfg.bundleMiB, cfg.buildRounds)
	if _, err := exec.LookPath("sha256sum"); err != nil {
		return nil, "", fmt.Errorf("sha256sum (coreutils) is required: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	payload := filepath.Join(dir, "rootfs.img")
	bundle := filepath.Join(dir, benchModel+"-"+benchVersion+".tar")
	key := filepath.Join(dir, "bench.key")
	if err := keys.Generate(key); err != nil {
		return nil, "", err
	}
	t0 := time.Now()
	if err := writeRandomFile(payload, size); err != nil {
		return nil, "", err
	}
	logf("   wrote the payload in %s", time.Since(t0).Round(time.Millisecond))
	env := append(os.Environ(), "DIALTONE_CONFIG=/dev/null")
	buildArgs := []string{"firmware", "build", "--model", benchModel, "--version", benchVersion, "--hardware", benchHardware,
		"--payload", "rootfs.img=" + payload, "-o", bundle}
	verifyArgs := []string{"firmware", "verify", "--key", key + ".pub", bundle}
	signArgs := []string{"firmware", "sign", "--key", key, bundle}
	opts := firmware.BuildOptions{Model: benchModel, Version: benchVersion, Hardware: []string{benchHardware},
		Payloads: []firmware.PayloadFile{{Name: "rootfs.img", Path: payload}}}

	var (
		shaPayload, build, shaBundle, verify, sign []float64
		goSHA, libBuild, libVerify                 []float64
		diskCopy                                   []float64
		buildRatio, verifyRatio                    []float64
		bundleSize                                 int64
	)
	for round := range cfg.buildRounds {
		// Each pair runs in alternating order; the reference and the
		// subject read the same file, warm in the page cache either way.
		var dRef, dSub time.Duration
		var err error
		pair := func(ref, sub func() error) error {
			if round%2 == 0 {
				if err := ref(); err != nil {
					return err
				}
				return sub()
			}
			if err := sub(); err != nil {
				return err
			}
			return ref()
		}
		err = pair(func() (err error) { dRef, _, err = sha256sum(payload); return err },
			func() (err error) { dSub, _, _, err = runTimed(env, cfg.dialtone, buildArgs...); return err })
		if err != nil {
			return nil, "", err
		}
		shaPayload = append(shaPayload, mibps(size, dRef))
		build = append(build, mibps(size, dSub))
		buildRatio = append(buildRatio, dRef.Seconds()/dSub.Seconds())

		fi, err := os.Stat(bundle)
		if err != nil {
			return nil, "", err
		}
		bundleSize = fi.Size()
		d, _, _, err := runTimed(env, cfg.dialtone, signArgs...)
		if err != nil {
			return nil, "", err
		}
		sign = append(sign, mibps(bundleSize, d))

		err = pair(func() (err error) { dRef, _, err = sha256sum(bundle); return err },
			func() (err error) { dSub, _, _, err = runTimed(env, cfg.dialtone, verifyArgs...); return err })
		if err != nil {
			return nil, "", err
		}
		shaBundle = append(shaBundle, mibps(bundleSize, dRef))
		verify = append(verify, mibps(bundleSize, dSub))
		verifyRatio = append(verifyRatio, dRef.Seconds()/dSub.Seconds())

		// In-process, for where the time goes: the hash alone with Go's
		// crypto/sha256, Build without the file write and fsync, Verify
		// without the signature pass.
		dg, _, err := goSHA256(bundle)
		if err != nil {
			return nil, "", err
		}
		goSHA = append(goSHA, mibps(bundleSize, dg))
		t := time.Now()
		if _, err := firmware.Build(context.Background(), opts, io.Discard); err != nil {
			return nil, "", err
		}
		libBuild = append(libBuild, mibps(size, time.Since(t)))
		dc, err := copyFsync(payload, filepath.Join(dir, "copy.img"))
		if err != nil {
			return nil, "", err
		}
		diskCopy = append(diskCopy, mibps(size, dc))
		f, err := os.Open(bundle)
		if err != nil {
			return nil, "", err
		}
		t = time.Now()
		_, err = firmware.Verify(context.Background(), f, firmware.DefaultLimits())
		libVerify = append(libVerify, mibps(bundleSize, time.Since(t)))
		f.Close()
		if err != nil {
			return nil, "", err
		}
		logf("   round %d: sha256sum %4.0f MiB/s | build %4.0f MiB/s (%.2fx) | sign %4.0f | sha256sum bundle %4.0f | verify %4.0f MiB/s (%.2fx) | in-process: sha256 %4.0f, Build->Discard %4.0f, copy+fsync %4.0f, Verify %4.0f",
			round+1, shaPayload[round], build[round], buildRatio[round], sign[round], shaBundle[round], verify[round], verifyRatio[round],
			goSHA[round], libBuild[round], diskCopy[round], libVerify[round])
	}
	logf("   spread (max-min)/median: sha256sum %.0f%%, build %.0f%%, verify %.0f%%", spread(shaPayload), spread(build), spread(verify))
	mib := fmt.Sprintf("%d MiB", cfg.bundleMiB)
	rows := []row{
		{name: "dialtone firmware build, " + mib, value: median(build), ref: median(shaPayload), unit: "MiB/s", refName: "sha256sum payload",
			ratio: median(buildRatio), min: 0.7, rounds: buildRatio},
		{name: "  crypto/sha256 in-process", value: median(goSHA), ref: median(shaBundle), unit: "MiB/s", refName: "sha256sum",
			ratio: median(goSHA) / median(shaBundle)},
		{name: "  copy payload + fsync (the disk alone)", value: median(diskCopy), ref: median(shaPayload), unit: "MiB/s", refName: "sha256sum",
			ratio: median(diskCopy) / median(shaPayload)},
		{name: "  firmware.Build -> io.Discard (no disk)", value: median(libBuild), ref: median(goSHA), unit: "MiB/s", refName: "crypto/sha256",
			ratio: median(libBuild) / median(goSHA)},
		{name: "dialtone firmware verify, " + mib, value: median(verify), ref: median(shaBundle), unit: "MiB/s", refName: "sha256sum bundle",
			ratio: median(verifyRatio), min: 0.7, rounds: verifyRatio},
		{name: "  firmware.Verify in-process", value: median(libVerify), ref: median(goSHA), unit: "MiB/s", refName: "crypto/sha256",
			ratio: median(libVerify) / median(goSHA)},
		{name: "  dialtone firmware sign", value: median(sign), ref: median(shaBundle), unit: "MiB/s", refName: "sha256sum",
			ratio: median(sign) / median(shaBundle)},
	}
	if err := os.Remove(payload); err != nil {
		return rows, "", err
	}
	return rows, bundle, nil
}

// copyFsync copies src to a new file with 1 MiB writes and fsyncs it, as
// `cp` then `sync` would: the time this disk needs to store the bytes a
// build writes, with no hashing. The copy is removed.
func copyFsync(src, dst string) (time.Duration, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	t := time.Now()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer os.Remove(dst)
	defer out.Close()
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	if err := out.Close(); err != nil {
		return 0, err
	}
	return time.Since(t), nil
}
