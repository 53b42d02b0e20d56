package update

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dialtone-dev/dialtone/agent/slot"
	"github.com/dialtone-dev/dialtone/firmware"
	"github.com/dialtone-dev/dialtone/internal/wire"
)

// install checks the publisher's signature over the TUF digest, then
// streams the bundle into the inactive slot in one pass: the bytes from the
// network go to the resume file, the TUF hash and the bundle reader, which
// checks each payload against the manifest as it writes it into the slot.
// The slot is finished (still not bootable) only when the TUF length and
// SHA-256 and every payload hash matched.
func (a *Agent) install(ctx context.Context, t *trust, c candidate) (*installed, error) {
	sha, ok := c.info.Hashes["sha256"]
	if !ok || len(sha) != sha256.Size {
		return nil, &RefusedError{Reason: "target has no sha256 hash"}
	}
	shaHex := hex.EncodeToString(sha)
	j := Journal{Step: StepVerified, Target: c.path, Version: c.custom.Version, SHA256: shaHex}
	sig, err := t.smallTarget(ctx, c.custom.Signature, 4096)
	if err != nil {
		return nil, err
	}
	keys := t.publisherKeys(c.role)
	if len(keys) == 0 {
		return nil, &RefusedError{Reason: "no publisher key pinned for role " + c.role}
	}
	// The signature is over the digest TUF vouches for, so it is checked
	// before a byte of the bundle is fetched: a forgery costs no download.
	var sigErr error
	for _, k := range keys {
		if sigErr = firmware.VerifySignatureDigest(k, sha, sig); sigErr == nil {
			break
		}
	}
	if sigErr != nil {
		return nil, &RefusedError{Reason: "publisher signature does not verify", Err: sigErr}
	}
	if err := a.record(j); err != nil {
		return nil, err
	}
	in, man, err := a.fetchWithRetries(ctx, c, shaHex, &j)
	if err != nil {
		return nil, err
	}
	if man.Model != a.cfg.Model || man.Version != c.custom.Version || !slices.Contains(man.Hardware, a.cfg.Hardware) {
		in.Abort()
		os.Remove(a.partPath(shaHex))
		return nil, &RefusedError{Reason: fmt.Sprintf("bundle manifest (%s %s %v) does not match its target or this device", man.Model, man.Version, man.Hardware)}
	}
	info := slot.Info{Model: man.Model, Version: man.Version, SHA256: shaHex}
	if err := in.Finish(ctx, info); err != nil {
		in.Abort()
		return nil, err
	}
	j.Step = StepInstalled
	if err := a.record(j); err != nil {
		return nil, err
	}
	// The slot holds the image now; dropping the resume file before the
	// kernel writes it back saves the disk half of its writes.
	os.Remove(a.partPath(shaHex))
	return &installed{Info: info, slot: in.Slot()}, nil
}

// ErrNoSpace means the disk cannot hold the download and its extraction.
var ErrNoSpace = errors.New("not enough free disk space")

// fetchWithRetries makes a bounded number of attempts, each resuming the
// download where the last one stopped (and extracting again from the
// start of the bundle, re-read locally), with a growing pause between
// them; then it gives up with a clear error and the check loop carries on.
// Security refusals and a full disk are not retried.
func (a *Agent) fetchWithRetries(ctx context.Context, c candidate, shaHex string, j *Journal) (slot.Installer, firmware.Manifest, error) {
	backoff := a.cfg.RetryBackoff
	var last error
	for attempt := 1; attempt <= a.cfg.DownloadAttempts; attempt++ {
		in, err := a.slots.BeginInstall(ctx)
		if err != nil {
			return nil, firmware.Manifest{}, err
		}
		j.Step, j.Slot = StepDownloading, in.Slot()
		if err := a.record(*j); err != nil {
			in.Abort()
			return nil, firmware.Manifest{}, err
		}
		man, err := a.fetch(ctx, c, shaHex, in)
		if err == nil {
			j.Step = StepDownloaded
			if err := a.record(*j); err != nil {
				in.Abort()
				return nil, firmware.Manifest{}, err
			}
			return in, man, nil
		}
		in.Abort()
		var ref *RefusedError
		if errors.As(err, &ref) || errors.Is(err, ErrNoSpace) || ctx.Err() != nil {
			return nil, firmware.Manifest{}, err
		}
		last = err
		a.log.Warn("download attempt failed", "attempt", attempt, "of", a.cfg.DownloadAttempts, "err", err)
		a.event(ctx, wire.EventDownload, c.custom.Version, "attempt failed: "+err.Error(),
			map[string]string{"attempt": strconv.Itoa(attempt)})
		if attempt == a.cfg.DownloadAttempts {
			break
		}
		select {
		case <-ctx.Done():
			return nil, firmware.Manifest{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return nil, firmware.Manifest{}, fmt.Errorf("download of %s failed after %d attempts (the partial file is kept for the next check): %w", c.path, a.cfg.DownloadAttempts, last)
}

// idleReader cancels its request when no byte has arrived for a while, so
// that a server trickling data (slow retrieval) cannot hold the phone.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.timer.Reset(i.idle)
	}
	return n, err
}

// feed hands the bundle stream to the extractor. Once the extractor has
// stopped (a payload that does not match its manifest), writes are
// swallowed: the download still runs to the TUF length so that the TUF
// hash, not the first broken payload, gives the verdict, and the resume
// file is complete for the next attempt.
type feed struct {
	pw   *io.PipeWriter
	dead bool
}

func (f *feed) Write(p []byte) (int, error) {
	if !f.dead {
		if _, err := f.pw.Write(p); err != nil {
			f.dead = true
		}
	}
	return len(p), nil
}

// fetch is one attempt: what the resume file holds is re-read, the rest
// comes from the server with an HTTP Range request; every byte goes to the
// TUF hash and the extractor, the new ones to the resume file too. It
// never reads more than the TUF length.
func (a *Agent) fetch(ctx context.Context, c candidate, shaHex string, in slot.Installer) (firmware.Manifest, error) {
	file := a.partPath(shaHex)
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return firmware.Manifest{}, err
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return firmware.Manifest{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return firmware.Manifest{}, err
	}
	have := fi.Size()
	if have > c.info.Length {
		if err := f.Truncate(0); err != nil {
			return firmware.Manifest{}, err
		}
		have = 0
	}
	// The slot and the resume file both need room.
	if free, err := freeBytes(dir); err == nil && free < uint64(c.info.Length-have)+uint64(c.info.Length) {
		return firmware.Manifest{}, fmt.Errorf("%w: %d bytes free in %s, %d needed for %s", ErrNoSpace, free, dir, (c.info.Length-have)+c.info.Length, c.path)
	}

	pr, pw := io.Pipe()
	type result struct {
		man firmware.Manifest
		err error
	}
	done := make(chan result, 1)
	go func() {
		man, err := a.extract(ctx, pr, in)
		pr.CloseWithError(err)
		done <- result{man, err}
	}()
	h := sha256.New()
	fd := &feed{pw: pw}
	ferr := a.stream(ctx, c, f, have, h, fd)
	if ferr != nil {
		pw.CloseWithError(ferr)
	} else {
		pw.Close()
	}
	res := <-done
	if ferr != nil {
		return firmware.Manifest{}, ferr
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != shaHex {
		f.Close()
		os.Remove(file)
		return firmware.Manifest{}, &RefusedError{Reason: "downloaded bytes do not match the trusted sha256", Err: fmt.Errorf("got %s, want %s", got, shaHex)}
	}
	if res.err != nil {
		var ref *RefusedError
		if errors.As(res.err, &ref) {
			f.Close()
			os.Remove(file)
		}
		return firmware.Manifest{}, res.err
	}
	return res.man, nil
}

// stream writes the resume file's bytes and then the server's to h and
// fd, appending the server's to f.
func (a *Agent) stream(ctx context.Context, c candidate, f *os.File, have int64, h hash.Hash, fd *feed) error {
	buf := make([]byte, 1<<20)
	if have > 0 {
		if _, err := io.CopyBuffer(io.MultiWriter(h, fd), io.NewSectionReader(f, 0, have), buf); err != nil {
			return fmt.Errorf("re-reading the partial download: %w", err)
		}
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return err
	}
	if have == c.info.Length {
		return nil
	}
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	timer := time.AfterFunc(a.cfg.DownloadIdleTimeout, func() { stalled.Store(true); cancel() })
	defer timer.Stop()
	dirName, base := filepath.Split(c.path)
	shaHex := hex.EncodeToString(c.info.Hashes["sha256"])
	u := a.cfg.Server + "/tuf/targets/" + dirName + shaHex + "." + base
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		if stalled.Load() && ctx.Err() == nil {
			err = fmt.Errorf("no answer for %s: %w", a.cfg.DownloadIdleTimeout, err)
		}
		return fmt.Errorf("downloading %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	body := &idleReader{r: resp.Body, timer: timer, idle: a.cfg.DownloadIdleTimeout}
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
	case resp.StatusCode == http.StatusOK && have == 0:
	case resp.StatusCode == http.StatusOK:
		// The server ignored the range: skip what the resume file holds.
		// Whatever those bytes are, the TUF hash over the stream decides.
		a.log.Warn("server ignored the range request; skipping the bytes already here", "bytes", have)
		if _, err := io.CopyN(io.Discard, body, have); err != nil {
			if stalled.Load() && ctx.Err() == nil {
				err = fmt.Errorf("no data for %s: %w", a.cfg.DownloadIdleTimeout, err)
			}
			return fmt.Errorf("downloading %s: %w", c.path, err)
		}
	default:
		return fmt.Errorf("downloading %s: %s", c.path, resp.Status)
	}
	a.log.Info("downloading", "target", c.path, "from", have, "length", c.info.Length)
	remaining := c.info.Length - have
	prog := &progress{a: a, ctx: ctx, version: c.custom.Version, done: have, total: c.info.Length}
	n, err := io.CopyBuffer(io.MultiWriter(f, h, fd, prog), io.LimitReader(body, remaining+1), buf)
	if err != nil && stalled.Load() && ctx.Err() == nil {
		err = fmt.Errorf("no data for %s: %w", a.cfg.DownloadIdleTimeout, err)
	}
	if n > remaining {
		f.Truncate(0)
		return &RefusedError{Reason: fmt.Sprintf("server sent more than the %d bytes trusted metadata allows", c.info.Length)}
	}
	if err != nil {
		// Keep what arrived: the next attempt resumes from there.
		return fmt.Errorf("downloading %s: %w", c.path, err)
	}
	if n < remaining {
		return fmt.Errorf("downloading %s: connection ended after %d of %d bytes", c.path, have+n, c.info.Length)
	}
	a.event(ctx, wire.EventDownload, c.custom.Version, "downloaded", map[string]string{"bytes": strconv.FormatInt(c.info.Length, 10)})
	return nil
}

// extract reads the bundle stream into the slot; each payload is checked
// against the manifest as it is written.
func (a *Agent) extract(ctx context.Context, r io.Reader, in slot.Installer) (firmware.Manifest, error) {
	first := true
	man, err := firmware.Read(ctx, r, firmware.DefaultLimits(), func(p firmware.Payload, r io.Reader) error {
		if !first {
			a.crashPoint(CrashMidExtract)
		}
		first = false
		out, err := in.Payload(p.Name, p.Size)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(out, r, make([]byte, 1<<20))
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		if errors.Is(err, firmware.ErrManifest) || errors.Is(err, firmware.ErrPayloadMismatch) || errors.Is(err, firmware.ErrBundleLayout) {
			return man, &RefusedError{Reason: "bundle does not verify", Err: err}
		}
		return man, fmt.Errorf("extracting bundle: %w", err)
	}
	return man, nil
}

func (a *Agent) partPath(shaHex string) string {
	return filepath.Join(a.cfg.StateDir, "download", shaHex+".part")
}

// progress reports a download's progress: every chunk to Config.Progress
// (a terminal's progress bar), each quarter as an event for the server.
type progress struct {
	a           *Agent
	ctx         context.Context
	version     string
	done, total int64
	quarter     int64
	crashed     bool
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if !p.crashed {
		p.crashed = true
		p.a.crashPoint(CrashMidDownload)
	}
	if p.a.cfg.Progress != nil {
		p.a.cfg.Progress(p.done, p.total)
	}
	if q := p.done * 4 / max(p.total, 1); q > p.quarter && q < 4 {
		p.quarter = q
		p.a.event(p.ctx, wire.EventDownload, p.version, fmt.Sprintf("%d%%", q*25),
			map[string]string{"bytes": strconv.FormatInt(p.done, 10), "total": strconv.FormatInt(p.total, 10)})
	}
	return len(b), nil
}
