package keys

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKMSReferences covers dispatch to sigstore's KMS providers with
// references that fail before any network I/O: no KMS is reachable from the
// tests, and the AWS, GCP and Azure SDKs would otherwise go looking for
// credentials and endpoints on the network.
func TestKMSReferences(t *testing.T) {
	for _, v := range []string{"VAULT_ADDR", "VAULT_TOKEN"} {
		unsetEnv(t, v)
	}
	ctx := context.Background()
	tests := []struct {
		uri     string
		errText string
	}{
		{"awskms:///not-a-key-id", "kms specification should be in the format awskms://"},
		{"awskms:///arn:aws:kms:eu-west-1:1:key/x", "kms specification"},
		{"awskms:alias/x", "want awskms://"},
		{"gcpkms://projects/p/locations/l/keyRings/r", "kms specification should be in the format gcpkms://"},
		{"gcpkms:projects/p", "want gcpkms://"},
		{"azurekms://vault-only", "kms specification should be in the format azurekms://"},
		{"hashivault://a/b", "kms specification should be in the format hashivault://"},
		{"hashivault://publisher", "VAULT_ADDR is not set"},
		{"HashiVault://publisher", "VAULT_ADDR is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			_, err := LoadSigner(ctx, tt.uri)
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.errText)
			}
			if !strings.Contains(err.Error(), tt.uri) {
				t.Errorf("err = %q, want it to name the key", err)
			}
			if _, err := GenerateURI(ctx, tt.uri); !errors.Is(err, ErrUnsupportedURI) {
				t.Errorf("GenerateURI: err = %v, want ErrUnsupportedURI", err)
			}
			if _, err := LoadPublic(tt.uri); !errors.Is(err, ErrUnsupportedURI) {
				t.Errorf("LoadPublic: err = %v, want ErrUnsupportedURI", err)
			}
		})
	}
	for _, s := range kmsSchemes {
		if !kmsProviderLinked(s) {
			t.Errorf("KMS provider %s is not linked into this build", s)
		}
	}
}

// fakeVault serves the part of HashiCorp Vault's transit secrets engine API
// that sigstore's hashivault provider uses (read key, sign, verify), with an
// ECDSA P-256 key. It is not Vault: it tests Dialtone's wiring and the
// provider's requests and decoding, not Vault itself.
type fakeVault struct {
	key   *ecdsa.PrivateKey
	token string

	mu       sync.Mutex
	requests []string // "METHOD path"
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	if r.Header.Get("X-Vault-Token") != f.token {
		reply(http.StatusForbidden, map[string]any{"errors": []string{"permission denied"}})
		return
	}
	var body struct {
		Input     string `json:"input"`
		Prehashed bool   `json:"prehashed"`
		Signature string `json:"signature"`
	}
	if r.Method != http.MethodGet {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			reply(http.StatusBadRequest, map[string]any{"errors": []string{err.Error()}})
			return
		}
	}
	digest, _ := base64.StdEncoding.DecodeString(body.Input)
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/transit/keys/dialtone":
		pub, err := MarshalPublicPEM(f.key.Public())
		if err != nil {
			reply(http.StatusInternalServerError, nil)
			return
		}
		reply(http.StatusOK, map[string]any{"data": map[string]any{
			"type":           "ecdsa-p256",
			"latest_version": 1,
			"keys":           map[string]any{"1": map[string]any{"name": "P-256", "public_key": string(pub)}},
		}})
	case r.URL.Path == "/v1/transit/sign/dialtone/sha2-256":
		if !body.Prehashed || len(digest) != sha256.Size {
			reply(http.StatusBadRequest, map[string]any{"errors": []string{"want a prehashed SHA-256 digest"}})
			return
		}
		sig, err := ecdsa.SignASN1(rand.Reader, f.key, digest)
		if err != nil {
			reply(http.StatusInternalServerError, nil)
			return
		}
		reply(http.StatusOK, map[string]any{"data": map[string]any{
			"signature": "vault:v1:" + base64.StdEncoding.EncodeToString(sig), "key_version": 1}})
	case r.URL.Path == "/v1/transit/verify/dialtone/sha2-256":
		sig, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(body.Signature, "vault:v1:"))
		valid := err == nil && body.Prehashed && ecdsa.VerifyASN1(&f.key.PublicKey, digest, sig)
		reply(http.StatusOK, map[string]any{"data": map[string]any{"valid": valid}})
	default:
		reply(http.StatusNotFound, map[string]any{"errors": []string{}})
	}
}

// TestKMSHashivaultFake loads a hashivault:// key through kms.Get against
// fakeVault on the loopback interface, signs, and verifies the signature
// with the public key alone.
func TestKMSHashivaultFake(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fv := &fakeVault{key: key, token: "s.dialtone-test"}
	srv := httptest.NewServer(fv)
	defer srv.Close()
	for _, v := range []string{"TRANSIT_SECRET_ENGINE_PATH", "VAULT_KEY_PREFIX", "VAULT_NAMESPACE"} {
		unsetEnv(t, v)
	}
	t.Setenv("VAULT_ADDR", srv.URL)
	t.Setenv("VAULT_TOKEN", fv.token)
	ctx := context.Background()

	sv, err := LoadSigner(ctx, "hashivault://dialtone")
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	pub, err := sv.PublicKey()
	if err != nil || !key.PublicKey.Equal(pub) {
		t.Fatalf("PublicKey = %v, %v; want the transit key", pub, err)
	}
	checkSignsFor(t, sv, &key.PublicKey)
	msg := []byte("targets.json")
	sig, err := sv.SignMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig) {
		t.Fatal("signature does not verify over SHA-256 of the message")
	}

	t.Run("wrong token", func(t *testing.T) {
		t.Setenv("VAULT_TOKEN", "s.wrong")
		_, err := LoadSigner(ctx, "hashivault://dialtone")
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("err = %v, want permission denied at load time", err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		_, err := LoadSigner(ctx, "hashivault://nope")
		if err == nil || !strings.Contains(err.Error(), "hashivault://nope") {
			t.Fatalf("err = %v, want an error naming the key", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := LoadSigner(cctx, "hashivault://dialtone"); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// fakeAWSKMS serves the AWS KMS JSON API calls that sigstore's awskms
// provider makes (DescribeKey, GetPublicKey, Sign) for one ECDSA P-256 key.
// Like fakeVault it is a stand-in for the protocol, not for AWS.
type fakeAWSKMS struct {
	key   *ecdsa.PrivateKey
	keyID string

	mu      sync.Mutex
	targets []string
	authz   []string
}

func (f *fakeAWSKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	f.mu.Lock()
	f.targets = append(f.targets, target)
	f.authz = append(f.authz, r.Header.Get("Authorization"))
	f.mu.Unlock()
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	var req struct {
		KeyID            string `json:"KeyId"`
		Message          []byte `json:"Message"`
		MessageType      string `json:"MessageType"`
		SigningAlgorithm string `json:"SigningAlgorithm"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		reply(http.StatusBadRequest, map[string]string{"__type": "ValidationException", "message": err.Error()})
		return
	}
	if req.KeyID != f.keyID {
		reply(http.StatusBadRequest, map[string]string{"__type": "NotFoundException", "message": "Alias " + req.KeyID + " is not found."})
		return
	}
	meta := map[string]any{
		"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab", "Arn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY", "KeyState": "Enabled", "Enabled": true,
		"SigningAlgorithms": []string{"ECDSA_SHA_256"},
	}
	switch target {
	case "TrentService.DescribeKey":
		reply(http.StatusOK, map[string]any{"KeyMetadata": meta})
	case "TrentService.GetPublicKey":
		der, err := x509.MarshalPKIXPublicKey(f.key.Public())
		if err != nil {
			reply(http.StatusInternalServerError, nil)
			return
		}
		reply(http.StatusOK, map[string]any{"KeyId": meta["KeyId"], "PublicKey": der, "KeySpec": "ECC_NIST_P256",
			"KeyUsage": "SIGN_VERIFY", "SigningAlgorithms": []string{"ECDSA_SHA_256"}})
	case "TrentService.Sign":
		if req.MessageType != "DIGEST" || req.SigningAlgorithm != "ECDSA_SHA_256" || len(req.Message) != sha256.Size {
			reply(http.StatusBadRequest, map[string]string{"__type": "ValidationException", "message": "want an ECDSA_SHA_256 digest"})
			return
		}
		sig, err := ecdsa.SignASN1(rand.Reader, f.key, req.Message)
		if err != nil {
			reply(http.StatusInternalServerError, nil)
			return
		}
		reply(http.StatusOK, map[string]any{"KeyId": meta["KeyId"], "Signature": sig, "SigningAlgorithm": "ECDSA_SHA_256"})
	default:
		reply(http.StatusBadRequest, map[string]string{"__type": "UnknownOperationException"})
	}
}

// TestKMSAWSFake loads an awskms:// key with an explicit endpoint, served by
// fakeAWSKMS over TLS on the loopback interface, with static credentials
// from the environment so that the SDK looks nowhere else.
func TestKMSAWSFake(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fk := &fakeAWSKMS{key: key, keyID: "alias/dialtone"}
	srv := httptest.NewTLSServer(fk)
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS",
		"AWS_TLS_INSECURE_SKIP_VERIFY", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		unsetEnv(t, v)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDDIALTONETEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dialtone-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	t.Setenv("AWS_CA_BUNDLE", ca)
	host := strings.TrimPrefix(srv.URL, "https://")
	ctx := context.Background()

	sv, err := LoadSigner(ctx, "awskms://"+host+"/alias/dialtone")
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	pub, err := sv.PublicKey()
	if err != nil || !key.PublicKey.Equal(pub) {
		t.Fatalf("PublicKey = %v, %v; want the KMS key", pub, err)
	}
	checkSignsFor(t, sv, &key.PublicKey)
	fk.mu.Lock()
	for _, a := range fk.authz {
		if !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=AKIDDIALTONETEST/") {
			t.Errorf("request not SigV4-signed with the environment's key: %q", a)
		}
	}
	if !slices.Contains(fk.targets, "TrentService.Sign") {
		t.Errorf("no Sign call reached the fake: %v", fk.targets)
	}
	fk.mu.Unlock()

	_, err = LoadSigner(ctx, "awskms://"+host+"/alias/nope")
	if err == nil || !strings.Contains(err.Error(), "NotFoundException") {
		t.Fatalf("missing alias: err = %v, want NotFoundException at load time", err)
	}
}

// TestKMSAWSLocalKMS signs through awskms:// against local-kms, an
// independent AWS KMS emulator that hack/install-deps.sh builds into .bin/,
// seeded with a P-256 key this test knows, on a loopback port. The SDK finds
// it through AWS_ENDPOINT_URL_KMS: local-kms speaks plain HTTP, and an
// endpoint in the key URI means HTTPS to the provider.
func TestKMSAWSLocalKMS(t *testing.T) {
	bin := filepath.Join("..", ".bin", "local-kms")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("local-kms"); err != nil {
			t.Fatal("local-kms not found in .bin/ or PATH: install with: make deps")
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	const keyID = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	keyPEM := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	seed := "Keys:\n  Asymmetric:\n    Ecc:\n      - Metadata:\n          KeyId: " + keyID +
		"\n          KeyUsage: SIGN_VERIFY\n          Description: dialtone keys test\n        PrivateKeyPem: |\n          " +
		strings.ReplaceAll(keyPEM, "\n", "\n          ") +
		"\nAliases:\n  - AliasName: alias/dialtone\n    TargetKeyId: " + keyID + "\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "seed.yaml"), []byte(seed), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT=0", "KMS_REGION=us-east-1", "KMS_ACCOUNT_ID=111122223333",
		"KMS_DATA_PATH="+filepath.Join(dir, "data"), "KMS_SEED_PATH="+filepath.Join(dir, "seed.yaml"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // logrus writes to stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ports := make(chan string, 1)
	var logMu sync.Mutex
	var logBuf strings.Builder
	go func() {
		started := regexp.MustCompile(`Local KMS started on [0-9.]+:([0-9]+)`)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			logMu.Lock()
			logBuf.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if m := started.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ports <- m[1]:
				default:
				}
			}
		}
	}()
	var port string
	select {
	case port = <-ports:
	case <-time.After(20 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("local-kms did not start within 20s:\n%s", logBuf.String())
	}

	for _, v := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE",
		"AWS_TLS_INSECURE_SKIP_VERIFY", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		unsetEnv(t, v)
	}
	t.Setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:"+port)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDDIALTONETEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "dialtone-test-secret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "no-config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "no-credentials"))
	ctx := context.Background()

	for _, uri := range []string{
		"awskms:///alias/dialtone",
		"awskms:///" + keyID,
		"awskms:///arn:aws:kms:us-east-1:111122223333:key/" + keyID,
	} {
		t.Run(uri, func(t *testing.T) {
			sv, err := LoadSigner(ctx, uri)
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			pub, err := sv.PublicKey()
			if err != nil || !key.PublicKey.Equal(pub) {
				t.Fatalf("PublicKey = %v, %v; want the seeded key", pub, err)
			}
			checkSignsFor(t, sv, &key.PublicKey)
		})
	}
	_, err = LoadSigner(ctx, "awskms:///alias/nope")
	if err == nil || !strings.Contains(err.Error(), "NotFoundException") {
		t.Fatalf("missing alias: err = %v, want NotFoundException at load time", err)
	}
}
