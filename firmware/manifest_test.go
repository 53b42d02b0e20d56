package firmware

import (
	"errors"
	"strings"
	"testing"
)

func TestReadManifestVersions(t *testing.T) {
	tests := []struct {
		version string
		ok      bool
	}{
		{"0.0.0", true},
		{"1.2.3", true},
		{"10.20.30", true},
		{"1.0.0-alpha", true},
		{"1.0.0-alpha.1", true},
		{"1.0.0-0.3.7", true},
		{"1.0.0-x.7.z.92", true},
		{"1.0.0-x-y-z.--", true},
		{"1.0.0-rc.1", true},
		{"1.2", false},
		{"1", false},
		{"1.2.3.4", false},
		{"01.2.3", false},
		{"1.2.03", false},
		{"v1.2.3", false},
		{"1.2.3-", false},
		{"1.2.3-01", false},
		{"1.2.3-alpha..1", false},
		{"1.2.3-alpha_1", false},
		{"1.2.3+build", false},
		{"1.2.3-rc.1+build", false},
		{" 1.2.3", false},
		{"1.2.3\n", false},
		{"", false},
		{"1.2.3-" + strings.Repeat("a", 64), false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			m := manifestFor([]testPayload{{"a.bin", []byte("a")}})
			m.Version = tt.version
			_, err := ReadManifest(mustJSON(t, m), DefaultLimits())
			if tt.ok && err != nil {
				t.Fatalf("ReadManifest: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrManifest) {
				t.Fatalf("err = %v, want ErrManifest", err)
			}
		})
	}
}

func TestReadManifestJSON(t *testing.T) {
	const payloads = `[{"name":"a.bin","size":1,"sha256":"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}]`
	const base = `{"schema":1,"model":"dt-100","version":"1.2.3","hardware":["rev-a"],` +
		`"payloads":` + payloads + `,"created":"2025-06-01T12:00:00Z"}`
	tests := []struct {
		name  string
		json  string
		ok    bool
		inMsg string
	}{
		{name: "valid", json: base, ok: true},
		{name: "valid with whitespace", json: "\n " + strings.ReplaceAll(base, ",", " ,\n ") + "\n", ok: true},
		{name: "offset time", json: strings.Replace(base, "12:00:00Z", "14:00:00+02:00", 1), ok: true},
		{name: "unknown field", json: strings.Replace(base, `{"schema"`, `{"x":1,"schema"`, 1), inMsg: `unknown field "x"`},
		{name: "unknown nested", json: strings.Replace(base, `"size":1`, `"size":1,"mode":1`, 1), inMsg: `unknown field "mode"`},
		{name: "duplicate field", json: strings.Replace(base, `"schema":1`, `"schema":1,"schema":1`, 1), inMsg: "duplicate"},
		{name: "duplicate nested", json: strings.Replace(base, `"size":1`, `"size":1,"size":1`, 1), inMsg: "duplicate"},
		{name: "case variant", json: strings.Replace(base, `"model"`, `"MODEL"`, 1), inMsg: "unknown field"},
		{name: "object where string", json: strings.Replace(base, `"dt-100"`, `{"a":1}`, 1)},
		{name: "nested arrays", json: strings.Replace(base, `["rev-a"]`, `[["rev-a"]]`, 1)},
		{name: "hardware string", json: strings.Replace(base, `["rev-a"]`, `"rev-a"`, 1)},
		{name: "float schema", json: strings.Replace(base, `"schema":1`, `"schema":1.0`, 1)},
		{name: "string size", json: strings.Replace(base, `"size":1`, `"size":"1"`, 1)},
		{name: "trailing data", json: base + "x", inMsg: "after the manifest"},
		{name: "two objects", json: base + base},
		{name: "truncated", json: base[:len(base)-1]},
		{name: "null", json: "null"},
		{name: "empty", json: ""},
		{name: "deep nesting", json: strings.Repeat("[", 10000)},
		{name: "bad time", json: strings.Replace(base, "2025-06-01T12:00:00Z", "yesterday", 1)},
		{name: "bad hex", json: strings.Replace(base, "ca97", "zz97", 1), inMsg: "sha256"},
		{name: "short hex", json: strings.Replace(base, "ca97", "", 1), inMsg: "sha256"},
		{name: "hardware empty string", json: strings.Replace(base, `["rev-a"]`, `[""]`, 1)},
		{name: "hardware null", json: strings.Replace(base, `["rev-a"]`, `null`, 1)},
		{name: "payloads empty", json: strings.Replace(base, payloads, `[]`, 1), inMsg: "no payloads"},
		{name: "payloads null", json: strings.Replace(base, payloads, `null`, 1), inMsg: "no payloads"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadManifest([]byte(tt.json), DefaultLimits())
			if tt.ok {
				if err != nil {
					t.Fatalf("ReadManifest: %v", err)
				}
				if m.Model != "dt-100" || len(m.Payloads) != 1 || m.Payloads[0].Size != 1 {
					t.Fatalf("decoded %+v", m)
				}
				return
			}
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("err = %v, want ErrManifest", err)
			}
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.inMsg)
			}
		})
	}
}

func TestReadManifestNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"rootfs.img", true},
		{"kernel-6.1+dt.bin", true},
		{"A", true},
		{strings.Repeat("a", 100), true},
		{strings.Repeat("a", 101), false},
		{"", false},
		{".hidden", false},
		{"..", false},
		{"a..b", false},
		{"a/b", false},
		{`a\b`, false},
		{"a b", false},
		{"naïve.bin", false},
		{"manifest.json", false},
		{"MANIFEST.json", false},
		{"a\x00b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := manifestFor([]testPayload{{tt.name, []byte("a")}})
			_, err := ReadManifest(mustJSON(t, m), DefaultLimits())
			if tt.ok != (err == nil) {
				t.Fatalf("ReadManifest(name %q): err = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrManifest) {
				t.Fatalf("err = %v, want ErrManifest", err)
			}
		})
	}
}
