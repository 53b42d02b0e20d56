package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/cel"
	"github.com/dialtone-dev/dialtone/internal/quote/quotetest"
)

type benchRepo map[string]Target

func (r benchRepo) TargetBySHA256(model, sha string) (Target, bool) {
	t, ok := r[sha]
	return t, ok && t.Model == model
}

// BenchmarkVerifyKey is one attestation's verification with a parsed AK: a
// day's log (boot, install, boot).
func BenchmarkVerifyKey(b *testing.B) {
	repo := benchRepo{}
	ak := quotetest.NewAK()
	var recs []cel.Record
	var log []byte
	for n, v := range []struct{ kind, version string }{{cel.KindBooted, "1.0.0"}, {cel.KindInstalled, "1.1.0"}, {cel.KindBooted, "1.1.0"}} {
		f := cel.Firmware{Kind: v.kind, Version: v.version, Target: "firmware/dt100/dt100-" + v.version + ".tar", SHA256: sha256.Sum256([]byte(v.version))}
		repo[hex.EncodeToString(f.SHA256[:])] = Target{Model: "dt100", Version: v.version, Path: f.Target}
		r := cel.NewRecord(uint64(n), 14, f)
		recs, log = append(recs, r), cel.Append(log, r)
	}
	nonce := []byte("a nonce of 32 bytes, more or les")
	ev := Evidence{Quote: ak.Quote(nonce, map[uint][32]byte{14: cel.Replay(recs)[14]}), Log: log}
	key := ak.Key()
	claim := Claim{Model: "dt100", Version: "1.1.0"}
	if r := VerifyKey(key, ev, nonce, 14, claim, repo); r.Outcome != Trusted {
		b.Fatalf("%+v", r)
	}
	for b.Loop() {
		VerifyKey(key, ev, nonce, 14, claim, repo)
	}
}
