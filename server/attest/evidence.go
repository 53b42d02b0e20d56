package attest

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/dialtone-dev/dialtone/internal/atomicfile"
	"github.com/dialtone-dev/dialtone/internal/quote"
)

// Files WriteEvidence writes, named for what tpm2_checkquote takes:
//
//	tpm2_checkquote -u ak.pem -m quote.msg -s quote.sig -f pcrs.bin \
//	    -g sha256 -q "$(cat nonce.hex)"
const (
	EvidenceAK        = "ak.pem"    // the AK's public key, PEM
	EvidenceMessage   = "quote.msg" // TPMS_ATTEST
	EvidenceSignature = "quote.sig" // TPMT_SIGNATURE
	EvidencePCRs      = "pcrs.bin"  // PCR values, tpm2-tools' serialized format
	EvidenceNonce     = "nonce.hex" // the qualifying data, hex
)

// WriteEvidence writes an attestation in the files tpm2_checkquote takes,
// so that an operator can check the server's verdict with another tool.
func WriteEvidence(dir string, akPublic []byte, q quote.Quote, nonce []byte, pcrs map[uint][32]byte) error {
	key, err := quote.AKPublic(akPublic)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return fmt.Errorf("encoding the AK: %w", err)
	}
	pcrFile, err := SerializePCRs(pcrs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("evidence: %w", err)
	}
	for name, b := range map[string][]byte{
		EvidenceAK:        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		EvidenceMessage:   q.Attest,
		EvidenceSignature: q.Signature,
		EvidencePCRs:      pcrFile,
		EvidenceNonce:     []byte(hex.EncodeToString(nonce)),
	} {
		if err := atomicfile.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("evidence: %w", err)
		}
	}
	return nil
}

// SerializePCRs encodes SHA-256 PCR values the way tpm2-tools 5 writes and
// reads them by default ("serialized": its C structures in little-endian
// byte order): a TPML_PCR_SELECTION (count, then 16 TPMS_PCR_SELECTIONs of
// hash, sizeofSelect, pcrSelect[4] and a padding byte), the number of
// TPML_DIGESTs that follow, and TPML_DIGESTs of at most 8 TPM2B_DIGESTs
// (size, then a 64-byte buffer) each, in ascending PCR order.
func SerializePCRs(pcrs map[uint][32]byte) ([]byte, error) {
	idx := slices.Sorted(func(yield func(uint) bool) {
		for p := range pcrs {
			if !yield(p) {
				return
			}
		}
	})
	var sel [4]byte
	for _, p := range idx {
		if p > 23 {
			return nil, fmt.Errorf("PCR %d out of range", p)
		}
		sel[p/8] |= 1 << (p % 8)
	}
	le := binary.LittleEndian
	var b []byte
	// TPML_PCR_SELECTION: one SHA-256 bank.
	b = le.AppendUint32(b, 1)
	for i := range 16 {
		if i == 0 {
			b = le.AppendUint16(b, 0x000B)
			b = append(b, 3)
			b = append(b, sel[:]...)
		} else {
			b = append(b, make([]byte, 2+1+4)...)
		}
		b = append(b, 0) // padding to the structure's 2-byte alignment
	}
	lists := (len(idx) + 7) / 8
	b = le.AppendUint32(b, uint32(lists))
	for l := range lists {
		chunk := idx[l*8 : min(len(idx), (l+1)*8)]
		b = le.AppendUint32(b, uint32(len(chunk)))
		for i := range 8 {
			if i < len(chunk) {
				v := pcrs[chunk[i]]
				b = le.AppendUint16(b, 32)
				b = append(b, v[:]...)
				b = append(b, make([]byte, 64-32)...)
			} else {
				b = append(b, make([]byte, 2+64)...)
			}
		}
	}
	return b, nil
}
