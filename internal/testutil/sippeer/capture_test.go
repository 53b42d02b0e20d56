package sippeer

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCapturePlaintextSIP registers baresip over TLS and sipp over UDP: the
// capture must find SIP in clear on the UDP port only.
func TestCapturePlaintextSIP(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"alice": "secret", "bob": "hunter2"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tlsCap := StartCapture(t, k.TLSAddr.Port())
	udpCap := StartCapture(t, k.UDPAddr.Port())

	b := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "secret", CAFile: pki.CAFile})
	if _, err := b.WaitEvent(ctx, EventRegisterOK); err != nil {
		t.Fatal(err)
	}
	if _, err := RunSipp(ctx, t, SippOptions{Scenario: ScenarioRegister, Target: k.UDPAddr.String(),
		Service: "bob", AuthUser: "bob", AuthPassword: "hunter2", Keys: map[string]string{"domain": k.Domain}}); err != nil {
		t.Fatal(err)
	}

	pkts, err := tlsCap.Packets()
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) < 4 {
		t.Fatalf("TLS capture holds %d packets; the registration was not captured", len(pkts))
	}
	if lines, err := tlsCap.PlaintextSIP(); err != nil || len(lines) != 0 {
		t.Errorf("TLS port: PlaintextSIP = %q, %v; want none", lines, err)
	}
	if ok, err := tlsCap.ContainsPayload([]byte("alice")); err != nil || ok {
		t.Errorf("TLS port: ContainsPayload(alice) = %v, %v; want false", ok, err)
	}

	lines, err := udpCap.PlaintextSIP()
	if err != nil {
		t.Fatal(err)
	}
	port := ":" + strconv.Itoa(int(k.UDPAddr.Port()))
	var register, ok200 bool
	for _, l := range lines {
		register = register || strings.Contains(l, "REGISTER sip:"+k.Domain+" SIP/2.0")
		ok200 = ok200 || strings.Contains(l, "SIP/2.0 200 OK")
		if !strings.HasPrefix(l, "udp ") || !strings.Contains(l, port) {
			t.Errorf("line not on the UDP port: %q", l)
		}
	}
	if !register || !ok200 {
		t.Errorf("UDP port: PlaintextSIP = %q; want a REGISTER and a 200 OK", lines)
	}
	if ok, err := udpCap.ContainsPayload([]byte("Authorization: Digest username=\"bob\"")); err != nil || !ok {
		t.Errorf("UDP port: ContainsPayload(Authorization) = %v, %v; want true", ok, err)
	}
}

// TestCaptureAudio calls between two baresips and looks for the caller's
// µ-law audio on the wire: absent with SRTP, present with plain RTP.
func TestCaptureAudio(t *testing.T) {
	for _, tt := range []struct {
		mediaEnc string
		inClear  bool
	}{
		{"srtp-mand", false},
		{"none", true},
	} {
		t.Run(tt.mediaEnc, func(t *testing.T) {
			k, pki := newKamailio(t, map[string]string{"alice": "secret", "bob": "hunter2"})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tone := Tone(8000, 1000, 3)
			wav := filepath.Join(t.TempDir(), "tone.wav")
			if err := WriteWAV(wav, 8000, tone); err != nil {
				t.Fatal(err)
			}
			alice := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "secret",
				CAFile: pki.CAFile, PlayWAV: wav, MediaEnc: tt.mediaEnc})
			bob := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "bob", Password: "hunter2",
				CAFile: pki.CAFile, AutoAnswer: true, MediaEnc: tt.mediaEnc})
			for _, b := range []*Baresip{alice, bob} {
				if _, err := b.WaitEvent(ctx, EventRegisterOK); err != nil {
					t.Fatal(err)
				}
			}
			capture := StartCapture(t) // all of lo: the RTP ports are not known in advance
			if err := alice.Dial(ctx, k.URI("bob")); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.WaitEvent(ctx, EventCallEstablished); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			if err := alice.Hangup(ctx); err != nil {
				t.Fatal(err)
			}
			// 40 bytes: five periods of the tone, found in any RTP packet
			// of it whatever the frame alignment.
			got, err := capture.ContainsPayload(PCMU(tone[:40]))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.inClear {
				t.Errorf("sent audio found on the wire = %v; want %v", got, tt.inClear)
			}
		})
	}
}
