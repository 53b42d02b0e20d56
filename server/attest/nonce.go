package attest

import (
	"crypto/rand"
	"crypto/subtle"
	"sync"
	"time"
)

// NonceTTL is how long an issued nonce can be used.
const NonceTTL = 60 * time.Second

// Nonces hands out single-use nonces, one outstanding per device: a quote
// over a nonce is accepted once, within NonceTTL of its issue, and a newer
// nonce for the device voids the older one. They live in memory: a server
// restart voids them all, and the phones ask again.
type Nonces struct {
	mu  sync.Mutex
	m   map[string]issued
	now func() time.Time
}

type issued struct {
	nonce []byte
	at    time.Time
}

// NewNonces returns an empty set.
func NewNonces() *Nonces { return &Nonces{m: map[string]issued{}, now: time.Now} }

// Issue returns a fresh 32-byte nonce for device.
func (n *Nonces) Issue(device string) []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if len(n.m) > 0 && len(n.m)%1024 == 0 {
		for d, i := range n.m { // drop expired ones now and then
			if now.Sub(i.at) > NonceTTL {
				delete(n.m, d)
			}
		}
	}
	n.m[device] = issued{nonce: b, at: now}
	return b
}

// Take consumes device's nonce if it is nonce and still valid.
func (n *Nonces) Take(device string, nonce []byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	i, ok := n.m[device]
	if !ok {
		return false
	}
	delete(n.m, device) // single use, even when it does not match
	return n.now().Sub(i.at) <= NonceTTL && subtle.ConstantTimeCompare(i.nonce, nonce) == 1
}
