//go:build cgo

package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
	"github.com/sigstore/sigstore/pkg/signature"
)

// DER of the named curve prime256v1 (P-256), the CKA_EC_PARAMS value.
var p256Params = mustMarshalOID(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})

func mustMarshalOID(oid asn1.ObjectIdentifier) []byte {
	b, err := asn1.Marshal(oid)
	if err != nil {
		panic(err)
	}
	return b
}

// p11Module is a loaded, initialised PKCS#11 library. Modules stay loaded
// for the life of the process: C_Finalize would pull the rug from under any
// other user of the same library in the process.
type p11Module struct {
	path string
	ctx  *pkcs11.Ctx

	// A token's login state is shared by all the sessions an application
	// has with it, and a second C_Login only says CKR_USER_ALREADY_LOGGED_IN
	// without checking the PIN. So the module remembers, per slot, which PIN
	// this process logged in with and how many sessions are open, and
	// compares a later PIN itself. Closing the last session logs out.
	mu     sync.Mutex
	logins map[uint]*p11Login
}

type p11Login struct {
	pin      string // "" while the sessions are not logged in
	sessions int
}

var p11Modules = struct {
	sync.Mutex
	m map[string]*p11Module
}{m: map[string]*p11Module{}}

// openP11Module loads and initialises the module at path once per process.
func openP11Module(path string) (*p11Module, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 module-path: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("pkcs11 module-path %s: not a regular file", path)
	}
	// The same library under two names is one library to the dynamic
	// loader, and must be one module here for the login bookkeeping.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 module-path: %w", err)
	}
	p11Modules.Lock()
	defer p11Modules.Unlock()
	if m := p11Modules.m[real]; m != nil {
		return m, nil
	}
	ctx := pkcs11.New(real)
	if ctx == nil {
		return nil, fmt.Errorf("loading PKCS#11 module %s failed: not a shared library exporting C_GetFunctionList", path)
	}
	if err := ctx.Initialize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("initialising PKCS#11 module %s: %w", path, err)
	}
	m := &p11Module{path: path, ctx: ctx, logins: map[uint]*p11Login{}}
	p11Modules.m[real] = m
	return m, nil
}

func isCKR(err error, rv uint) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && uint(e) == rv
}

// trimLabel drops the blank (or NUL) padding of PKCS#11 fixed-size strings.
func trimLabel(s string) string { return strings.TrimRight(s, " \x00") }

// findSlot returns the one slot whose token matches u.
func (m *p11Module) findSlot(u *pkcs11URI) (uint, pkcs11.TokenInfo, error) {
	if u.LibMfr != "" || u.LibDesc != "" || u.LibVersion != "" {
		info, err := m.ctx.GetInfo()
		if err != nil {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("reading PKCS#11 module info: %w", err)
		}
		if u.LibMfr != "" && trimLabel(info.ManufacturerID) != u.LibMfr ||
			u.LibDesc != "" && trimLabel(info.LibraryDescription) != u.LibDesc ||
			!libVersionMatches(u.LibVersion, info.LibraryVersion) {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: module %s (%q %q %d.%d) does not match the uri's library attributes",
				ErrKeyNotFound, m.path, trimLabel(info.ManufacturerID), trimLabel(info.LibraryDescription),
				info.LibraryVersion.Major, info.LibraryVersion.Minor)
		}
	}
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("listing PKCS#11 slots: %w", err)
	}
	var (
		found   []uint
		info    pkcs11.TokenInfo
		present []string
	)
	for _, slot := range slots {
		ti, err := m.ctx.GetTokenInfo(slot)
		if err != nil {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("reading token info of slot %d: %w", slot, err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue // a blank token, such as SoftHSM's free slot
		}
		present = append(present, fmt.Sprintf("%q", trimLabel(ti.Label)))
		if u.SlotID != "" && u.SlotID != fmt.Sprint(slot) ||
			u.Token != "" && trimLabel(ti.Label) != u.Token ||
			u.Manufacturer != "" && trimLabel(ti.ManufacturerID) != u.Manufacturer ||
			u.Serial != "" && trimLabel(ti.SerialNumber) != u.Serial ||
			u.Model != "" && trimLabel(ti.Model) != u.Model {
			continue
		}
		if u.SlotDesc != "" || u.SlotMfr != "" {
			si, err := m.ctx.GetSlotInfo(slot)
			if err != nil {
				return 0, pkcs11.TokenInfo{}, fmt.Errorf("reading slot info of slot %d: %w", slot, err)
			}
			if u.SlotDesc != "" && trimLabel(si.SlotDescription) != u.SlotDesc ||
				u.SlotMfr != "" && trimLabel(si.ManufacturerID) != u.SlotMfr {
				continue
			}
		}
		found = append(found, slot)
		info = ti
	}
	switch len(found) {
	case 0:
		if len(present) == 0 {
			return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: module %s has no initialised token", ErrKeyNotFound, m.path)
		}
		return 0, pkcs11.TokenInfo{}, fmt.Errorf("%w: no token matches the uri (tokens present: %s)",
			ErrKeyNotFound, strings.Join(present, ", "))
	case 1:
		return found[0], info, nil
	}
	return 0, pkcs11.TokenInfo{}, fmt.Errorf("%d tokens match the uri (tokens present: %s); select one with token= or serial=",
		len(found), strings.Join(present, ", "))
}

func libVersionMatches(want string, have pkcs11.Version) bool {
	if want == "" {
		return true
	}
	major, minor, err := parseLibVersion(want)
	if err != nil || major != have.Major {
		return false
	}
	return !strings.Contains(want, ".") || minor == have.Minor
}

// openSession opens a session with the token in slot and logs it in with
// the PIN the uri supplies, if any (the token may require one).
func (m *p11Module) openSession(slot uint, ti pkcs11.TokenInfo, u *pkcs11URI, rw bool) (pkcs11.SessionHandle, error) {
	pin, havePIN, err := u.pin()
	if err != nil {
		return 0, err
	}
	label := trimLabel(ti.Label)
	if !havePIN && ti.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0 {
		return 0, fmt.Errorf("token %q needs a PIN: set pin-value or pin-source in the uri, or the environment variable %s",
			label, PKCS11PINEnv)
	}
	flags := uint(pkcs11.CKF_SERIAL_SESSION)
	if rw {
		flags |= pkcs11.CKF_RW_SESSION
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	sh, err := m.ctx.OpenSession(slot, flags)
	if err != nil {
		return 0, fmt.Errorf("opening a session with token %q: %w", label, err)
	}
	l := m.logins[slot]
	if l == nil {
		l = &p11Login{}
		m.logins[slot] = l
	}
	if havePIN {
		switch {
		case l.pin != "":
			if subtle.ConstantTimeCompare([]byte(l.pin), []byte(pin)) != 1 {
				m.closeLocked(slot, sh, false)
				return 0, fmt.Errorf("token %q: %w: it differs from the PIN this process is logged in with", label, ErrWrongPIN)
			}
		default:
			err := m.ctx.Login(sh, pkcs11.CKU_USER, pin)
			switch {
			case err == nil, isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN):
				l.pin = pin
			case isCKR(err, pkcs11.CKR_PIN_INCORRECT), isCKR(err, pkcs11.CKR_PIN_LEN_RANGE):
				m.closeLocked(slot, sh, false)
				return 0, fmt.Errorf("logging in to token %q: %w (%v)", label, ErrWrongPIN, err)
			case isCKR(err, pkcs11.CKR_PIN_LOCKED):
				m.closeLocked(slot, sh, false)
				return 0, fmt.Errorf("logging in to token %q: the user PIN is locked after too many wrong PINs (%w)", label, err)
			default:
				m.closeLocked(slot, sh, false)
				return 0, fmt.Errorf("logging in to token %q: %w", label, err)
			}
		}
	}
	l.sessions++
	return sh, nil
}

// closeSession closes a session that openSession returned.
func (m *p11Module) closeSession(slot uint, sh pkcs11.SessionHandle) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeLocked(slot, sh, true)
}

func (m *p11Module) closeLocked(slot uint, sh pkcs11.SessionHandle, counted bool) {
	_ = m.ctx.CloseSession(sh)
	l := m.logins[slot]
	if l == nil {
		return
	}
	if counted {
		l.sessions--
	}
	if l.sessions <= 0 {
		// The last session is gone, and the login with it.
		delete(m.logins, slot)
	}
}

// findObjects returns up to two objects of class in the session that match
// the uri's object (label) and id.
func (m *p11Module) findObjects(sh pkcs11.SessionHandle, class *uint, label string, id []byte) ([]pkcs11.ObjectHandle, error) {
	var tmpl []*pkcs11.Attribute
	if class != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_CLASS, *class))
	}
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if err := m.ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, fmt.Errorf("searching the token: %w", err)
	}
	objs, _, err := m.ctx.FindObjects(sh, 2)
	if ferr := m.ctx.FindObjectsFinal(sh); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return nil, fmt.Errorf("searching the token: %w", err)
	}
	return objs, nil
}

// describeKey names the object the uri selects, for errors.
func describeKey(u *pkcs11URI) string {
	var parts []string
	if u.Object != "" {
		parts = append(parts, fmt.Sprintf("object=%q", u.Object))
	}
	if len(u.ID) > 0 {
		parts = append(parts, "id="+pctEncode(u.ID, ""))
	}
	return strings.Join(parts, " ")
}

// ulong decodes a CK_ULONG attribute value (native byte order).
func ulong(b []byte) (uint64, bool) {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b), true
	case 4:
		return uint64(binary.NativeEndian.Uint32(b)), true
	}
	return 0, false
}

// publicKeyOf returns the P-256 public key of the private key priv: from the
// public key object with the same CKA_ID (or, without an id, the same
// label), else from the private key's CKA_PUBLIC_KEY_INFO.
func (m *p11Module) publicKeyOf(sh pkcs11.SessionHandle, priv pkcs11.ObjectHandle, label string, id []byte) (*ecdsa.PublicKey, error) {
	class := uint(pkcs11.CKO_PUBLIC_KEY)
	var objs []pkcs11.ObjectHandle
	var err error
	if len(id) > 0 {
		objs, err = m.findObjects(sh, &class, "", id)
	} else if label != "" {
		objs, err = m.findObjects(sh, &class, label, nil)
	}
	if err != nil {
		return nil, err
	}
	if len(objs) == 1 {
		attrs, err := m.ctx.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("reading the public key: %w", err)
		}
		return parseECPoint(attrs[0].Value)
	}
	attrs, err := m.ctx.GetAttributeValue(sh, priv, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_KEY_INFO, nil)})
	if err != nil || len(attrs) == 0 || len(attrs[0].Value) == 0 {
		return nil, fmt.Errorf("%w: the token has no public key object (CKO_PUBLIC_KEY with the private key's id or label) for it",
			ErrKeyNotFound)
	}
	pub, err := x509.ParsePKIXPublicKey(attrs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("parsing CKA_PUBLIC_KEY_INFO: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: PKCS#11 keys must be ECDSA P-256, this one is %T", ErrUnsupportedKey, pub)
	}
	return ec, nil
}

// parseECPoint decodes CKA_EC_POINT: a DER OCTET STRING around an
// uncompressed P-256 point, or (from some tokens) the bare point.
func parseECPoint(b []byte) (*ecdsa.PublicKey, error) {
	point := b
	var inner []byte
	if rest, err := asn1.Unmarshal(b, &inner); err == nil && len(rest) == 0 && len(inner) == 65 {
		point = inner
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("%w: CKA_EC_POINT is not an uncompressed P-256 point: %v", ErrUnsupportedKey, err)
	}
	return pub, nil
}

// curveName names the curve in CKA_EC_PARAMS, for errors.
func curveName(params []byte) string {
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(params, &oid); err != nil {
		return "unknown curve"
	}
	switch oid.String() {
	case "1.3.132.0.34":
		return "P-384"
	case "1.3.132.0.35":
		return "P-521"
	case "1.3.132.0.10":
		return "secp256k1"
	}
	return "curve " + oid.String()
}

// openToken parses a pkcs11: URI, loads its module and finds the one token
// it names.
func openToken(ctx context.Context, uri string) (*pkcs11URI, *p11Module, uint, pkcs11.TokenInfo, error) {
	u, err := parseKeyRef(uri)
	if err != nil {
		return nil, nil, 0, pkcs11.TokenInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, 0, pkcs11.TokenInfo{}, err
	}
	m, err := openP11Module(u.ModulePath)
	if err != nil {
		return nil, nil, 0, pkcs11.TokenInfo{}, err
	}
	slot, ti, err := m.findSlot(u)
	if err != nil {
		return nil, nil, 0, pkcs11.TokenInfo{}, err
	}
	return u, m, slot, ti, nil
}

// loadPKCS11Signer opens the private key a pkcs11: URI names.
func loadPKCS11Signer(ctx context.Context, uri string) (signature.SignerVerifier, error) {
	u, m, slot, ti, err := openToken(ctx, uri)
	if err != nil {
		return nil, err
	}
	sh, err := m.openSession(slot, ti, u, false)
	if err != nil {
		return nil, err
	}
	s, err := m.newSigner(sh, slot, ti, u)
	if err != nil {
		m.closeSession(slot, sh)
		return nil, err
	}
	return s, nil
}

func (m *p11Module) newSigner(sh pkcs11.SessionHandle, slot uint, ti pkcs11.TokenInfo, u *pkcs11URI) (*pkcs11Signer, error) {
	class := uint(pkcs11.CKO_PRIVATE_KEY)
	objs, err := m.findObjects(sh, &class, u.Object, u.ID)
	if err != nil {
		return nil, err
	}
	token := trimLabel(ti.Label)
	switch len(objs) {
	case 0:
		return nil, fmt.Errorf("%w: no private key with %s in token %q (wrong name, or a key that needs a login the uri gives no PIN for)",
			ErrKeyNotFound, describeKey(u), token)
	case 2:
		return nil, fmt.Errorf("more than one private key with %s in token %q; name it by id= too", describeKey(u), token)
	}
	priv := objs[0]
	attrs, err := m.ctx.GetAttributeValue(sh, priv, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("reading the private key's attributes: %w", err)
	}
	if kt, ok := ulong(attrs[0].Value); !ok || kt != pkcs11.CKK_EC {
		return nil, fmt.Errorf("%w: PKCS#11 keys must be ECDSA P-256, this one has CKA_KEY_TYPE 0x%x", ErrUnsupportedKey, kt)
	}
	// CKA_EC_PARAMS apart: some tokens keep it on the public key only.
	if pa, err := m.ctx.GetAttributeValue(sh, priv, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, nil)}); err == nil &&
		len(pa) == 1 && len(pa[0].Value) > 0 && string(pa[0].Value) != string(p256Params) {
		return nil, fmt.Errorf("%w: PKCS#11 keys must be ECDSA P-256, this one is on %s", ErrUnsupportedKey, curveName(pa[0].Value))
	}
	pub, err := m.publicKeyOf(sh, priv, string(attrs[2].Value), attrs[1].Value)
	if err != nil {
		return nil, err
	}
	sess := &p11Session{mod: m, slot: slot, sh: sh}
	s := &pkcs11Signer{sess: sess, key: priv, pub: pub, name: fmt.Sprintf("%s in token %q", describeKey(u), token)}
	// A signer dropped without Close still gives its session back, so that
	// the token's login count stays right.
	runtime.AddCleanup(s, func(sess *p11Session) { sess.close() }, sess)
	return s, nil
}

// p11Session is a session a signer owns.
type p11Session struct {
	mod  *p11Module
	slot uint
	sh   pkcs11.SessionHandle

	mu     sync.Mutex // one operation at a time per session
	closed bool
}

func (p *p11Session) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	p.mod.closeSession(p.slot, p.sh)
}

// pkcs11Signer is an ECDSA P-256 private key in a PKCS#11 token, as a
// sigstore SignerVerifier that hashes with SHA-256, and as a crypto.Signer.
type pkcs11Signer struct {
	sess *p11Session
	key  pkcs11.ObjectHandle
	pub  *ecdsa.PublicKey
	name string
}

var (
	_ signature.SignerVerifier = (*pkcs11Signer)(nil)
	_ crypto.Signer            = (*pkcs11Signer)(nil)
	_ io.Closer                = (*pkcs11Signer)(nil)
)

// Close ends the signer's session with the token. Signing after Close fails.
func (s *pkcs11Signer) Close() error {
	s.sess.close()
	return nil
}

// Public implements crypto.Signer.
func (s *pkcs11Signer) Public() crypto.PublicKey { return s.pub }

// PublicKey implements signature.PublicKeyProvider.
func (s *pkcs11Signer) PublicKey(...signature.PublicKeyOption) (crypto.PublicKey, error) {
	return s.pub, nil
}

// SignMessage signs the SHA-256 digest of message, or the digest given with
// options.WithDigest, and returns an ASN.1 DER ECDSA signature.
func (s *pkcs11Signer) SignMessage(message io.Reader, opts ...signature.SignOption) ([]byte, error) {
	digest, _, err := signature.ComputeDigestForSigning(message, crypto.SHA256, []crypto.Hash{crypto.SHA256}, opts...)
	if err != nil {
		return nil, err
	}
	return s.signDigest(digest)
}

// Sign implements crypto.Signer for SHA-256 digests.
func (s *pkcs11Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("pkcs11 signer: only SHA-256 digests are signed")
	}
	return s.signDigest(digest)
}

func (s *pkcs11Signer) signDigest(digest []byte) ([]byte, error) {
	p := s.sess
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("signing with %s: the signer is closed", s.name)
	}
	raw, err := func() ([]byte, error) {
		if err := p.mod.ctx.SignInit(p.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}, s.key); err != nil {
			return nil, err
		}
		return p.mod.ctx.Sign(p.sh, digest)
	}()
	p.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", s.name, err)
	}
	if len(raw) != 64 {
		return nil, fmt.Errorf("signing with %s: the token returned a %d-byte signature, want 64 (r||s)", s.name, len(raw))
	}
	sig, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
	if err != nil {
		return nil, err
	}
	// A signature that the public key we hand out does not verify would
	// only be found out by the devices, so check it here.
	if !ecdsa.VerifyASN1(s.pub, digest, sig) {
		return nil, fmt.Errorf("signing with %s: the token's signature does not verify with its public key", s.name)
	}
	return sig, nil
}

// VerifySignature verifies an ECDSA signature over the SHA-256 digest of
// message in software, with the token's public key.
func (s *pkcs11Signer) VerifySignature(sig, message io.Reader, opts ...signature.VerifyOption) error {
	v, err := signature.LoadECDSAVerifier(s.pub, crypto.SHA256)
	if err != nil {
		return err
	}
	return v.VerifySignature(sig, message, opts...)
}

// generatePKCS11 creates an ECDSA P-256 key pair in the token a pkcs11: URI
// names, labelled with its object and id (a random 16-byte id when the URI
// has none). It refuses when an object with that label or id exists.
func generatePKCS11(ctx context.Context, uri string) (crypto.PublicKey, error) {
	u, m, slot, ti, err := openToken(ctx, uri)
	if err != nil {
		return nil, err
	}
	token := trimLabel(ti.Label)
	if ti.Flags&pkcs11.CKF_WRITE_PROTECTED != 0 {
		return nil, fmt.Errorf("token %q is write-protected", token)
	}
	sh, err := m.openSession(slot, ti, u, true)
	if err != nil {
		return nil, err
	}
	defer m.closeSession(slot, sh)

	if u.Object != "" {
		objs, err := m.findObjects(sh, nil, u.Object, nil)
		if err != nil {
			return nil, err
		}
		if len(objs) > 0 {
			return nil, fmt.Errorf("token %q already holds an object with label %q: %w", token, u.Object, fs.ErrExist)
		}
	}
	id := u.ID
	if len(id) > 0 {
		objs, err := m.findObjects(sh, nil, "", id)
		if err != nil {
			return nil, err
		}
		if len(objs) > 0 {
			return nil, fmt.Errorf("token %q already holds an object with id %s: %w", token, pctEncode(id, ""), fs.ErrExist)
		}
	} else {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
	if u.Object != "" {
		pubT = append(pubT, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
		privT = append(privT, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	pubH, _, err := m.ctx.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, pubT, privT)
	if err != nil {
		if isCKR(err, pkcs11.CKR_USER_NOT_LOGGED_IN) {
			return nil, fmt.Errorf("generating a key in token %q: log in with a PIN (pin-value, pin-source or %s): %w", token, PKCS11PINEnv, err)
		}
		return nil, fmt.Errorf("generating a key in token %q: %w", token, err)
	}
	attrs, err := m.ctx.GetAttributeValue(sh, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, fmt.Errorf("reading the new public key: %w", err)
	}
	return parseECPoint(attrs[0].Value)
}
