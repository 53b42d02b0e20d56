package sippeer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSippRegister(t *testing.T) {
	k, _ := newKamailio(t, map[string]string{"alice": "secret", "bob": "hunter2"})
	tests := []struct {
		name      string
		transport string
		target    string
		user, pw  string
		wantOK    bool
	}{
		{"tcp right password", "t1", k.TCPAddr.String(), "alice", "secret", true},
		{"udp right password", "u1", k.UDPAddr.String(), "bob", "hunter2", true},
		{"tcp wrong password", "t1", k.TCPAddr.String(), "alice", "wrong", false},
		{"udp unknown user", "u1", k.UDPAddr.String(), "mallory", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := RunSipp(ctx, t, SippOptions{
				Scenario: ScenarioRegister, Target: tt.target, Transport: tt.transport,
				Service: tt.user, AuthUser: tt.user, AuthPassword: tt.pw,
				Keys: map[string]string{"domain": k.Domain}, Timeout: 10 * time.Second,
			})
			if tt.wantOK {
				if err != nil || res.Successful != 1 || res.Failed != 0 {
					t.Fatalf("RunSipp = %+v, %v; want 1 successful call", res, err)
				}
				if ok, err := k.Registered(ctx, tt.user); !ok || err != nil {
					t.Fatalf("Registered(%s) = %v, %v after a successful REGISTER", tt.user, ok, err)
				}
				return
			}
			if !errors.Is(err, ErrSippFailed) || res.Failed != 1 || res.ExitCode != 1 {
				t.Fatalf("RunSipp = %+v, %v; want ErrSippFailed with 1 failed call", res, err)
			}
			if !strings.Contains(err.Error(), "403") {
				t.Errorf("error does not show the 403 reply: %v", err)
			}
		})
	}
}

// TestSippCallsBaresip sends sipp's INVITE scenarios over UDP to Kamailio,
// which relays them over TLS to a registered baresip with mandatory SRTP.
func TestSippCallsBaresip(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"bob": "hunter2"})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bob := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "bob", Password: "hunter2", CAFile: pki.CAFile, AutoAnswer: true})
	if _, err := bob.WaitEvent(ctx, EventRegisterOK); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scenario    string
		calls, rate int
	}{
		{ScenarioInviteSRTP, 1, 0},
		{ScenarioInviteRTP, 1, 0}, // refused with 488: srtp-mand
		{ScenarioInviteFlood, 20, 50},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			res, err := RunSipp(ctx, t, SippOptions{Scenario: tt.scenario, Target: k.UDPAddr.String(), Service: "bob",
				Calls: tt.calls, Rate: tt.rate, Keys: map[string]string{"domain": k.Domain}, Timeout: 20 * time.Second})
			if err != nil || res.Successful != tt.calls {
				t.Fatalf("RunSipp = %+v, %v; want %d successful calls", res, err, tt.calls)
			}
		})
	}
}

// TestBaresipCallsSippUAS: baresip calls a sipp UAS answering with SRTP,
// through Kamailio (TLS in, UDP out).
func TestBaresipCallsSippUAS(t *testing.T) {
	k, pki := newKamailio(t, map[string]string{"alice": "secret"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	uas := StartSippUAS(t, SippOptions{Scenario: ScenarioUASSRTP, Keys: map[string]string{"domain": k.Domain}})
	alice := StartBaresip(t, BaresipOptions{Proxy: k.TLSAddr, Domain: k.Domain, User: "alice", Password: "secret", CAFile: pki.CAFile})
	if _, err := alice.WaitEvent(ctx, EventRegisterOK); err != nil {
		t.Fatal(err)
	}
	if err := alice.Dial(ctx, uas.URI("uas")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WaitEvent(ctx, EventCallEstablished); err != nil {
		t.Fatal(err)
	}
	if err := alice.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := uas.Wait(ctx)
	if err != nil || res.Successful != 1 {
		t.Fatalf("UAS: %+v, %v; want 1 successful call", res, err)
	}
}
