package sippeer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBaresipRegistersOverTLS(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"alice": "secret"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "secret", CAFile: pki.CAFile})
	if _, err := b.WaitEvent(ctx, EventRegisterOK); err != nil {
		t.Fatal(err)
	}
	cs, err := k.Contacts(ctx, "alice")
	// baresip's Contact names its listening port; Kamailio must keep the
	// address of the connection the REGISTER came on to reach it.
	if err != nil || len(cs) != 1 || !strings.Contains(cs[0], "transport=tls received=sip:127.0.0.1:") {
		t.Fatalf("Contacts(alice) = %q, %v; want one TLS contact with its connection's address", cs, err)
	}

	bad := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "wrong", CAFile: pki.CAFile})
	if _, err := bad.WaitEvent(ctx, EventRegisterOK); err == nil {
		t.Fatal("baresip registered with a wrong password")
	}
}

// TestBaresipCallSRTP calls one baresip from another through Kamailio, both
// on TLS with mandatory SRTP: Kamailio must reach the callee over the TLS
// connection it registered on.
func TestBaresipCallSRTP(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"alice": "secret", "bob": "hunter2"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wav := filepath.Join(t.TempDir(), "tone.wav")
	if err := WriteWAV(wav, 8000, Tone(8000, 1000, 3)); err != nil {
		t.Fatal(err)
	}
	alice := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "secret", CAFile: pki.CAFile, PlayWAV: wav})
	bob := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "bob", Password: "hunter2", CAFile: pki.CAFile, AutoAnswer: true, Record: true})
	for _, b := range []*Baresip{alice, bob} {
		if _, err := b.WaitEvent(ctx, EventRegisterOK); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.Dial(ctx, k.URI("bob")); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Baresip{alice, bob} {
		if _, err := b.WaitEvent(ctx, EventCallEstablished); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	if err := alice.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Baresip{alice, bob} {
		if _, err := b.WaitEvent(ctx, EventCallClosed); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []*Baresip{alice, bob} {
		if !strings.Contains(b.Logs(), "SRTP is Enabled") {
			t.Errorf("%s: no SRTP in the call", b.URI)
		}
	}
	rec, err := bob.ReceivedWAV()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rate, samples, err := ReadWAV(f, 1<<22)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bob received %d samples at %d Hz", len(samples), rate)
}
