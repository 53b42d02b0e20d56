// Package sipsecret owns how the server keeps devices' SIP passwords at
// rest (issue 7, item 4): encrypted with AES-256-GCM under a key of the
// data directory (DATA/keys/sip-secrets.key), each bound to its device and
// tenant, so that the database alone — a backup, a replica, a dump — gives
// no password away, and a row copied onto another device does not decrypt
// as that device's.
package sipsecret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dialtone-dev/dialtone/internal/wire"
)

// KeySize is the key's length: AES-256.
const KeySize = 32

// MaxPassword bounds a SIP password: what the phone's TPM can seal
// (agent/tpm.MaxSealedSecret).
const MaxPassword = wire.MaxSIPPassword

// KeyFile is the key's name in the data directory's keys directory.
const KeyFile = "sip-secrets.key"

// version starts every ciphertext, naming the key and layout.
const version = 1

var (
	// ErrKey means the key file is not a key this package made.
	ErrKey = errors.New("bad SIP secrets key")
	// ErrDecrypt means a ciphertext does not open: damaged, made under
	// another key, or for another device or tenant.
	ErrDecrypt = errors.New("SIP password does not decrypt")
	// ErrPassword means a password is empty or too long.
	ErrPassword = fmt.Errorf("a SIP password is 1 to %d bytes", MaxPassword)
)

// Box encrypts and decrypts SIP passwords. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a KeySize-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrKey, len(key), KeySize)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return &Box{aead: aead}, nil
}

// OpenKeyFile loads the key at path, creating it (mode 0600, from
// crypto/rand) when there is none. Creation never replaces a key that
// another process made meanwhile: losing the key loses every password.
func OpenKeyFile(path string) (*Box, error) {
	key, err := readKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKey(path); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		key, err = readKey(path)
	}
	if err != nil {
		return nil, err
	}
	return New(key)
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the SIP secrets key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the SIP secrets key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is mode %v: readable by others than its owner (chmod 600)", ErrKey, path, fi.Mode().Perm())
	}
	key, err := io.ReadAll(io.LimitReader(f, KeySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the SIP secrets key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: %s holds %d bytes, want %d", ErrKey, path, len(key), KeySize)
	}
	return key, nil
}

// createKey writes a new key to a temporary file and links it into place,
// which fails with fs.ErrExist rather than replace a key.
func createKey(path string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	f, err := os.CreateTemp(dir, ".sip-secrets-*")
	if err != nil {
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("creating the SIP secrets key: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ad is the associated data that binds a ciphertext to its device, and
// to its layout version.
func ad(v byte, tenant, device string) ([]byte, error) {
	if !wire.ValidID(tenant) || !wire.ValidID(device) {
		return nil, fmt.Errorf("sipsecret: %w: tenant %q, device %q", wire.ErrInvalid, tenant, device)
	}
	return []byte(fmt.Sprintf("dialtone sip-password v%d\x00%s\x00%s", v, tenant, device)), nil
}

// Seal encrypts a password for the device of tenant.
func (b *Box) Seal(tenant, device string, password []byte) ([]byte, error) {
	if len(password) == 0 || len(password) > MaxPassword {
		return nil, ErrPassword
	}
	return b.seal(version, tenant, device, password)
}

func (b *Box) seal(v byte, tenant, device string, plaintext []byte) ([]byte, error) {
	a, err := ad(v, tenant, device)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1, 1+b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	out[0] = v
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("sipsecret: %w", err)
	}
	out = append(out, nonce...)
	return b.aead.Seal(out, nonce, plaintext, a), nil
}

// Open decrypts what Seal made for the same device and tenant; anything
// else is ErrDecrypt.
func (b *Box) Open(tenant, device string, ciphertext []byte) ([]byte, error) {
	pt, err := b.open(version, tenant, device, ciphertext)
	if err != nil {
		return nil, err
	}
	if len(pt) == 0 || len(pt) > MaxPassword {
		return nil, ErrPassword
	}
	return pt, nil
}

func (b *Box) open(v byte, tenant, device string, ciphertext []byte) ([]byte, error) {
	a, err := ad(v, tenant, device)
	if err != nil {
		return nil, err
	}
	n := b.aead.NonceSize()
	if len(ciphertext) < 1+n+b.aead.Overhead() || ciphertext[0] != v {
		return nil, fmt.Errorf("%w: not a version %d ciphertext", ErrDecrypt, v)
	}
	pt, err := b.aead.Open(nil, ciphertext[1:1+n], ciphertext[1+n:], a)
	if err != nil {
		return nil, fmt.Errorf("%w for %s/%s", ErrDecrypt, tenant, device)
	}
	return pt, nil
}

// versionCredential starts a ciphertext of SealCredential: the plaintext
// is the digest user name's length (one byte), the name, then the
// password.
const versionCredential = 2

// MaxAuthUser bounds a credential's digest user name (as a SIP profile's
// auth_user).
const MaxAuthUser = 128

// ErrAuthUser means a digest user name over MaxAuthUser bytes.
var ErrAuthUser = fmt.Errorf("a SIP digest user name is at most %d bytes", MaxAuthUser)

// Credential is a device's SIP digest credential. The user name is not
// secret, but it is sealed with the password so that whoever can write
// the database cannot change it under the device either.
type Credential struct {
	AuthUser string // "" for the profile's
	Password []byte
}

// SealCredential encrypts c for the device of tenant.
func (b *Box) SealCredential(tenant, device string, c Credential) ([]byte, error) {
	if len(c.Password) == 0 || len(c.Password) > MaxPassword {
		return nil, ErrPassword
	}
	if len(c.AuthUser) > MaxAuthUser {
		return nil, ErrAuthUser
	}
	pt := make([]byte, 0, 1+len(c.AuthUser)+len(c.Password))
	pt = append(pt, byte(len(c.AuthUser)))
	pt = append(pt, c.AuthUser...)
	pt = append(pt, c.Password...)
	return b.seal(versionCredential, tenant, device, pt)
}

// OpenCredential decrypts what SealCredential (or Seal: no user name)
// made for the same device and tenant; anything else is ErrDecrypt.
func (b *Box) OpenCredential(tenant, device string, ciphertext []byte) (Credential, error) {
	if len(ciphertext) > 0 && ciphertext[0] == version {
		pw, err := b.Open(tenant, device, ciphertext)
		return Credential{Password: pw}, err
	}
	pt, err := b.open(versionCredential, tenant, device, ciphertext)
	if err != nil {
		return Credential{}, err
	}
	if len(pt) < 1 || len(pt) < 1+int(pt[0]) {
		return Credential{}, fmt.Errorf("%w: a truncated credential", ErrDecrypt)
	}
	c := Credential{AuthUser: string(pt[1 : 1+int(pt[0])]), Password: pt[1+int(pt[0]):]}
	if len(c.Password) == 0 || len(c.Password) > MaxPassword {
		return Credential{}, ErrPassword
	}
	return c, nil
}
