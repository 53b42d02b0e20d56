package media

import (
	"fmt"

	"github.com/pion/srtp/v2"
	"github.com/pion/transport/v2/replaydetector"
)

// replayWindow is the SRTP and SRTCP replay window, in packets: RFC 3711
// §3.3.2 asks for at least 64; a phone sees little reordering.
const replayWindow = 128

// The highest indexes pion's own SRTPReplayProtection and
// SRTCPReplayProtection give their detectors: 48-bit SRTP packet index
// (ROC and sequence number), 31-bit SRTCP index.
const (
	maxSRTPIndex  = 1<<48 - 1
	maxSRTCPIndex = 1<<31 - 1
)

// supported lists the profiles a phone negotiates (RFC 4568 crypto
// suites AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 and RFC 7714's
// AEAD_AES_128_GCM).
func supported(p srtp.ProtectionProfile) bool {
	switch p {
	case srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.ProtectionProfileAes128CmHmacSha1_32, srtp.ProtectionProfileAeadAes128Gcm:
		return true
	}
	return false
}

// KeyLen is the length of a master key followed by its salt for p, as
// SDES carries it: 30 bytes for the AES-CM profiles, 28 for AES-GCM.
func KeyLen(p srtp.ProtectionProfile) (int, error) {
	if !supported(p) {
		return 0, fmt.Errorf("%w: %v", ErrProfile, p)
	}
	k, err := p.KeyLen()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrProfile, err)
	}
	s, err := p.SaltLen()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrProfile, err)
	}
	return k + s, nil
}

// splitKey checks keySalt's length for p and splits it.
func splitKey(p srtp.ProtectionProfile, keySalt []byte) (key, salt []byte, err error) {
	n, err := KeyLen(p)
	if err != nil {
		return nil, nil, err
	}
	if len(keySalt) != n {
		return nil, nil, fmt.Errorf("%w: %d bytes for %v, want %d (master key and salt)", ErrKeyLength, len(keySalt), p, n)
	}
	k, _ := p.KeyLen()
	return keySalt[:k], keySalt[k:], nil
}

// tagLen is what protection adds to an RTP packet under p.
func tagLen(p srtp.ProtectionProfile) int {
	a, _ := p.AuthTagRTPLen()
	b, _ := p.AEADAuthTagLen()
	return a + b
}

// replayFlag is set by the detectors of a decrypting context when they
// refuse an index. pion reports a replay with an unexported error type,
// so the detector, which pion calls before authenticating, tells us
// instead.
type replayFlag struct{ hit bool }

type flaggingDetector struct {
	d    replaydetector.ReplayDetector
	flag *replayFlag
}

func (f flaggingDetector) Check(seq uint64) (func(), bool) {
	accept, ok := f.d.Check(seq)
	if !ok {
		f.flag.hit = true
	}
	return accept, ok
}

// encryptContext is a context we protect with.
func encryptContext(p srtp.ProtectionProfile, keySalt []byte) (*srtp.Context, error) {
	key, salt, err := splitKey(p, keySalt)
	if err != nil {
		return nil, err
	}
	c, err := srtp.CreateContext(key, salt, p)
	if err != nil {
		return nil, fmt.Errorf("creating srtp context: %w", err)
	}
	return c, nil
}

// decryptContext is a context we unprotect with, with replay protection
// on for SRTP and SRTCP: pion v2 leaves it off unless asked. The
// detectors are the ones srtp.SRTPReplayProtection and
// srtp.SRTCPReplayProtection install, wrapped to raise flag.
func decryptContext(p srtp.ProtectionProfile, keySalt []byte, flag *replayFlag) (*srtp.Context, error) {
	key, salt, err := splitKey(p, keySalt)
	if err != nil {
		return nil, err
	}
	c, err := srtp.CreateContext(key, salt, p,
		srtp.SRTPReplayDetectorFactory(func() replaydetector.ReplayDetector {
			return flaggingDetector{replaydetector.New(replayWindow, maxSRTPIndex), flag}
		}),
		srtp.SRTCPReplayDetectorFactory(func() replaydetector.ReplayDetector {
			return flaggingDetector{replaydetector.New(replayWindow, maxSRTCPIndex), flag}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("creating srtp context: %w", err)
	}
	return c, nil
}
