package sdp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	psdp "github.com/pion/sdp/v3"
)

func FuzzParseCrypto(f *testing.F) {
	for _, s := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30,
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^20|1:4",
		"2 AEAD_AES_128_GCM inline:" + key28 + " KDR=1 UNENCRYPTED_SRTCP",
		"3 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^31|1:4;inline:" + key30 + "|2^31|2:4",
		"4 X inline:" + key46 + "|99999999999999999999999:128",
		"1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|1:1|",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCrypto(s)
		if err != nil {
			var ne *NegotiationError
			if !errors.As(err, &ne) || (ne.Status != StatusBadRequest && ne.Status != StatusNotAcceptableHere) {
				t.Fatalf("error %v is not a 400/488 NegotiationError", err)
			}
			return
		}
		back, err := ParseCrypto(c.String())
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("%q → %q does not round-trip: %+v, %v", s, c.String(), back, err)
		}
	})
}

// FuzzAnswer: any input yields a 400/488 refusal or a well-formed answer that re-parses, keeps the
// offer's m= layout, and carries the negotiated codec and our key.
func FuzzAnswer(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.sdp"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(offerSDP("m=audio 5004 RTP/SAVP 0", goodCrypto+" KDR=1", "a=crypto:2 AEAD_AES_128_GCM inline:"+key28))
	f.Add(offerSDP("m=audio 5004 RTP/AVP 0 8", "a=rtcp:5009 IN IP6 ::1", "a=inactive"))
	f.Fuzz(func(t *testing.T, offer []byte) {
		answer, n, err := NewSession("fuzz", nil).Answer(offer, local, DefaultPolicy(), nil)
		if err != nil {
			var ne *NegotiationError
			if !errors.As(err, &ne) || (ne.Status != StatusBadRequest && ne.Status != StatusNotAcceptableHere) {
				t.Fatalf("error %v is not a 400/488 NegotiationError", err)
			}
			return
		}
		if !bytes.HasSuffix(answer, []byte("\r\n")) || bytes.Count(answer, []byte("\n")) != bytes.Count(answer, []byte("\r\n")) {
			t.Fatalf("answer lines not CRLF:\n%q", answer)
		}
		osd, asd := &psdp.SessionDescription{}, &psdp.SessionDescription{}
		if err := asd.Unmarshal(answer); err != nil {
			t.Fatalf("answer does not re-parse: %v\n%s", err, answer)
		}
		if err := osd.Unmarshal(append(bytes.Clone(offer), '\r', '\n')); err != nil {
			t.Fatalf("accepted an offer pion cannot parse: %v", err)
		}
		if len(asd.MediaDescriptions) != len(osd.MediaDescriptions) {
			t.Fatalf("answer has %d m= lines, offer %d", len(asd.MediaDescriptions), len(osd.MediaDescriptions))
		}
		var rm *remoteMedia
		for _, md := range asd.MediaDescriptions {
			if md.MediaName.Port.Value == 0 {
				continue
			}
			if rm != nil {
				t.Fatal("answer accepts two streams")
			}
			m, nerr := parseMedia(asd, md)
			if nerr != nil {
				t.Fatalf("our answer does not parse as media: %v", nerr)
			}
			rm = &m
		}
		if rm == nil || rm.RTP != local || len(rm.Codecs) != 1 || rm.Codecs[0].PT != n.Codec.PT {
			t.Fatalf("answer media %+v does not match %+v", rm, n)
		}
		if !n.SRTP || len(rm.cryptos) != 1 {
			t.Fatalf("default policy answered without exactly one crypto: %+v", n)
		}
		c, err := ParseCrypto(rm.cryptos[0])
		if err != nil || !bytes.Equal(c.Key, n.LocalKey) || c.Suite != n.Suite {
			t.Fatalf("answer crypto %+v, %v does not carry LocalKey", c, err)
		}
	})
}
