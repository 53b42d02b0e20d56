package broker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Lines as Mosquitto 2.0.11 writes them (log_timestamp_format of the
// generated configuration, and the default Unix seconds).
const (
	lineDeniedQoS1 = "2026-11-25T06:17:29+0000: Denied PUBLISH from phone-a (d0, q1, r0, m1, 'dialtone/v1/acme/phone-b/events', ... (3 bytes))"
	lineDeniedQoS0 = "1795587212: Denied PUBLISH from phone-a (d0, q0, r1, m0, 'dialtone/v1/acme/phone-b/state', ... (4 bytes))"
	lineSubscribe  = "2026-11-25T06:17:29+0000: phone-a 0 #"
	lineShared     = "1795587212: dialtone-server 1 $share/dialtone/dialtone/v1/+/+/events"
	lineDropped    = "2026-11-25T06:17:38+0000: Outgoing messages are being dropped for client dialtone-server."
)

func TestParseMosquittoLine(t *testing.T) {
	ts := time.Date(2026, 11, 25, 6, 17, 29, 0, time.UTC)
	for _, tc := range []struct {
		line string
		cut  bool
		want Denial
		ok   bool
	}{
		{line: lineDeniedQoS1, ok: true, want: Denial{Time: ts, Client: "phone-a", Kind: DeniedPublish, Topic: "dialtone/v1/acme/phone-b/events"}},
		{line: lineDeniedQoS0, ok: true, want: Denial{Time: time.Unix(1795587212, 0), Client: "phone-a", Kind: DeniedPublish, Topic: "dialtone/v1/acme/phone-b/state"}},
		{line: "Denied PUBLISH from phone-a (d1, q1, r0, m7, 'a/it's', ... (0 bytes))", ok: true, want: Denial{Client: "phone-a", Kind: DeniedPublish, Topic: "a/it's"}},
		{line: "1: Denied PUBLISH from phone-a (d0, q1, r0, m1, 'dialtone/v1/acme/phone-b/events/xxxxx", ok: true, want: Denial{Time: time.Unix(1, 0), Client: "phone-a", Kind: DeniedPublish, Topic: "dialtone/v1/acme/phone-b/events/xxxxx", Truncated: true}},
		{line: lineDeniedQoS1, cut: true, ok: true, want: Denial{Time: ts, Client: "phone-a", Kind: DeniedPublish, Topic: "dialtone/v1/acme/phone-b/events', ... (3 bytes))", Truncated: true}},
		{line: lineSubscribe, ok: true, want: Denial{Time: ts, Client: "phone-a", Kind: DeniedSubscribe, Topic: "#"}},
		{line: lineShared, ok: true, want: Denial{Time: time.Unix(1795587212, 0), Client: "dialtone-server", Kind: DeniedSubscribe, Topic: "$share/dialtone/dialtone/v1/+/+/events"}},
		{line: "1795587212: phone-a 128 #", ok: true, want: Denial{Time: time.Unix(1795587212, 0), Client: "phone-a", Kind: DeniedSubscribe, Topic: "#"}},
		{line: lineDropped, ok: true, want: Denial{Time: time.Date(2026, 11, 25, 6, 17, 38, 0, time.UTC), Client: "dialtone-server", Kind: DroppedQueued}},
		// Lines of no interest.
		{line: "1795587212: Received PUBLISH from phone-a (d0, q1, r0, m1, 'dialtone/v1/acme/phone-a/events', ... (2 bytes))"},
		{line: "1795587212: \tdialtone/v1/# (QoS 1)"},
		{line: "1795587212: phone-a 7 #"},
		{line: "1795587212: mosquitto version 2.0.11 running"},
		{line: "1795587212: New client connected from 127.0.0.1:42418 as phone-a (p2, c1, k60, u'phone-a')."},
		{line: "1795587212: Sending CONNACK to phone-a (0, 0)"},
		{line: "1795587212: Client phone-a disconnected."},
		{line: "1795587212: Opening ipv4 listen socket on port 8883."},
		{line: ""},
		{line: "99999999999999999999: Denied PUBLISH from x"},
	} {
		got, ok := parseMosquittoLine(tc.line, tc.cut)
		if ok != tc.ok || ok && !got.Time.Equal(tc.want.Time) {
			t.Errorf("parse(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
			continue
		}
		got.Time, tc.want.Time = time.Time{}, time.Time{}
		if got != tc.want {
			t.Errorf("parse(%q) = %+v; want %+v", tc.line, got, tc.want)
		}
	}
}

// FuzzParseMosquittoLine checks that the parser never panics, reports only
// the kinds it knows with a client, and that a denied publish it formats
// itself, as Mosquitto does, parses back to the same values.
func FuzzParseMosquittoLine(f *testing.F) {
	for _, s := range []string{lineDeniedQoS1, lineDeniedQoS0, lineSubscribe, lineShared, lineDropped,
		"Denied PUBLISH from  (d0, q0, r0, m0, '', ... (0 bytes))", "1: a 1 b", "2026-11-25T06:17:29+0000: ", "x: y"} {
		f.Add(s, "phone-a", "dialtone/v1/acme/phone-b/events")
	}
	f.Fuzz(func(t *testing.T, line, client, topic string) {
		if len(line)+len(client)+len(topic) > 64<<10 {
			return // the watcher bounds lines far below this
		}
		for _, cut := range []bool{false, true} {
			d, ok := parseMosquittoLine(line, cut)
			if !ok {
				continue
			}
			switch d.Kind {
			case DeniedPublish, DeniedSubscribe, DroppedQueued:
			default:
				t.Fatalf("parse(%q): kind %q", line, d.Kind)
			}
			if d.Client == "" || len(d.Client)+len(d.Topic) > len(line) {
				t.Fatalf("parse(%q) = %+v", line, d)
			}
		}
		if client == "" || strings.ContainsAny(client, "\n") || strings.ContainsAny(topic, "\n") || strings.Contains(client, " (d") {
			return
		}
		l := "1795587212: Denied PUBLISH from " + client + " (d0, q1, r0, m1, '" + topic + "', ... (3 bytes))"
		d, ok := parseMosquittoLine(l, false)
		if !ok || d.Kind != DeniedPublish || d.Client != client || d.Topic != topic || d.Truncated {
			t.Fatalf("parse(%q) = %+v, %v", l, d, ok)
		}
	})
}

type recorder struct {
	mu  sync.Mutex
	got []Denial
}

func (r *recorder) add(d Denial) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, d)
}

func (r *recorder) waitLen(t *testing.T, n int) []Denial {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]Denial(nil), r.got...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d denials, want %d: %+v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startWatcher(t *testing.T, opts MosquittoLogOptions) *recorder {
	t.Helper()
	r := &recorder{}
	opts.OnDenial = r.add
	if opts.PollInterval == 0 {
		opts.PollInterval = 5 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- WatchMosquittoLog(ctx, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("WatchMosquittoLog: %v", err)
		}
	})
	return r
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestWatchMosquittoLogFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mosquitto.log")
	appendFile(t, path, lineDeniedQoS0+"\n") // before the watcher: not reported
	r := startWatcher(t, MosquittoLogOptions{Path: path, MaxLineLength: 200})
	time.Sleep(30 * time.Millisecond) // the watcher opened the file at its end

	// A line written in two parts; server and own-command subscriptions
	// are not reported; a long line is cut.
	appendFile(t, path, lineShared+"\n1: phone-a 1 dialtone/v1/acme/phone-a/cmd\n"+lineDeniedQoS1[:40])
	time.Sleep(20 * time.Millisecond)
	appendFile(t, path, lineDeniedQoS1[40:]+"\n"+lineSubscribe+"\n")
	long := "1: Denied PUBLISH from phone-a (d0, q1, r0, m1, 'dialtone/v1/acme/phone-b/events/" + strings.Repeat("y", 500) + "', ... (1 bytes))"
	appendFile(t, path, long+"\n"+lineDropped+"\n")
	got := r.waitLen(t, 4)
	if got[0].Kind != DeniedPublish || got[0].Topic != "dialtone/v1/acme/phone-b/events" ||
		got[1].Kind != DeniedSubscribe || got[1].Topic != "#" ||
		got[2].Kind != DeniedPublish || !got[2].Truncated || len(got[2].Topic) >= 200 ||
		got[3].Kind != DroppedQueued {
		t.Fatalf("denials: %+v", got)
	}

	// Truncated in place (copytruncate), then rotated (rename, new file).
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	appendFile(t, path, "1: phone-b 0 #\n")
	r.waitLen(t, 5)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path+".1", "2: phone-c 0 #\n") // still written by Mosquitto until SIGHUP
	time.Sleep(30 * time.Millisecond)
	appendFile(t, path, "3: phone-d 0 #\n")
	got = r.waitLen(t, 7)
	for i, want := range []string{"phone-b", "phone-c", "phone-d"} {
		if got[4+i].Client != want {
			t.Errorf("denial %d: %+v, want from %s", 4+i, got[4+i], want)
		}
	}
	if !got[6].Time.Equal(time.Unix(3, 0)) {
		t.Errorf("time %v", got[6].Time)
	}
}

func TestWatchMosquittoLogWaitsForTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mosquitto.log")
	r := startWatcher(t, MosquittoLogOptions{Path: path, ServerIdentities: []string{"srv-a"}})
	time.Sleep(20 * time.Millisecond)
	appendFile(t, path, "1: srv-a 1 dialtone/v1/#\n1: dialtone-server 1 dialtone/v1/#\n")
	got := r.waitLen(t, 1)
	if got[0].Client != "dialtone-server" {
		t.Fatalf("denials: %+v", got)
	}
}

func TestWatchMosquittoLogOptions(t *testing.T) {
	if err := WatchMosquittoLog(t.Context(), MosquittoLogOptions{OnDenial: func(Denial) {}}); err == nil {
		t.Error("no path accepted")
	}
	if err := WatchMosquittoLog(t.Context(), MosquittoLogOptions{Path: "x"}); err == nil {
		t.Error("no callback accepted")
	}
}
