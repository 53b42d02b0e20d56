// Package sippeer starts real SIP peers for interop tests: Kamailio as a
// registrar and proxy with digest auth and TLS, baresip as a TLS/SRTP user
// agent driven over its ctrl_tcp interface, sipp scenarios, and tshark
// captures on loopback with checks for what crossed the wire in clear.
//
// Every peer runs on free loopback ports with its files in a temporary
// directory, logs to the test log when the test fails, and is stopped in
// t.Cleanup. A missing program fails the test with Hint; it never skips.
//
// A typical interop test (error handling left out):
//
//	pki := testutil.NewPKI(t, t.TempDir(), "ca")
//	cert, key, _ := pki.Issue(t, "127.0.0.1", true)
//	k := sippeer.StartKamailio(t, sippeer.KamailioOptions{
//		Users: map[string]string{"phone": "pw", "bob": "pw2"}, CertFile: cert, KeyFile: key})
//	capture := sippeer.StartCapture(t, k.TLSAddr.Port())
//	// … the phone under test registers to k.TLSAddr as phone@k.Domain,
//	// trusting pki.CAFile; then:
//	_ = k.WaitRegistered(ctx, "phone")
//	bob := sippeer.StartBaresip(t, sippeer.BaresipOptions{Proxy: k.TLSAddr,
//		Domain: k.Domain, User: "bob", Password: "pw2", CAFile: pki.CAFile, AutoAnswer: true})
//	_, _ = bob.WaitEvent(ctx, sippeer.EventRegisterOK)
//	// … the phone calls k.URI("bob"), or sipp calls the phone:
//	res, err := sippeer.RunSipp(ctx, t, sippeer.SippOptions{Scenario: sippeer.ScenarioInviteRTP,
//		Target: k.UDPAddr.String(), Service: "phone", Keys: map[string]string{"domain": k.Domain}})
//	lines, _ := capture.PlaintextSIP() // want none on the TLS port
//
// Kamailio reaches a registered phone over the TLS connection it
// registered on (never a new one), so the phone needs no TLS listener.
package sippeer

// Hint tells how to install the programs this package runs.
const Hint = "make deps (apt-get install kamailio kamailio-tls-modules sip-tester baresip tshark)"
