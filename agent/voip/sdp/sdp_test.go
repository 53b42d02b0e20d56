package sdp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	psdp "github.com/pion/sdp/v3"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

var local = netip.MustParseAddrPort("192.0.2.10:40000")

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sampleCrypto returns the offered a=crypto value with the given tag.
func sampleCrypto(t *testing.T, sdp []byte, tag int) Crypto {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^a=crypto:(%d [^\r\n]*)`, tag))
	m := re.FindSubmatch(sdp)
	if m == nil {
		t.Fatalf("no crypto tag %d in sample", tag)
	}
	c, err := ParseCrypto(string(m[1]))
	if err != nil {
		t.Fatalf("sample crypto %d: %v", tag, err)
	}
	return c
}

// checkWellFormed checks what every SDP we emit must satisfy for real peers: CRLF lines, the pion
// grammar, and the m= layout of the offer it answers (nil when it is an offer).
func checkWellFormed(t *testing.T, out []byte, offer *psdp.SessionDescription) *psdp.SessionDescription {
	t.Helper()
	if !bytes.HasSuffix(out, []byte("\r\n")) || bytes.Count(out, []byte("\n")) != bytes.Count(out, []byte("\r\n")) {
		t.Errorf("not CRLF-terminated lines:\n%s", out)
	}
	sd := &psdp.SessionDescription{}
	if err := sd.Unmarshal(out); err != nil {
		t.Fatalf("our SDP does not re-parse: %v\n%s", err, out)
	}
	if offer != nil {
		if len(sd.MediaDescriptions) != len(offer.MediaDescriptions) {
			t.Fatalf("answer has %d m= lines, offer %d", len(sd.MediaDescriptions), len(offer.MediaDescriptions))
		}
		for i, md := range sd.MediaDescriptions {
			if md.MediaName.Media != offer.MediaDescriptions[i].MediaName.Media {
				t.Errorf("m= %d is %s, offer's is %s", i, md.MediaName.Media, offer.MediaDescriptions[i].MediaName.Media)
			}
		}
	}
	return sd
}

func TestAnswerSamples(t *testing.T) {
	tests := []struct {
		file       string
		policy     Policy
		codec      Codec
		tag        int // offered crypto we must pick; 0 for plain RTP
		suite      Suite
		remote     string
		remoteRTCP string
		dir        Direction
		ptime      int
	}{
		{file: "baresip_srtp_mand_offer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 1, suite: AESCM128HMACSHA180,
			remote: "192.0.2.2:46008", remoteRTCP: "192.0.2.2:46009", dir: SendRecv, ptime: 20},
		// Asterisk lists PCMA first; our preference (PCMU) wins, with the offer's crypto order.
		{file: "asterisk_offer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 1, suite: AESCM128HMACSHA180,
			remote: "203.0.113.10:17684", remoteRTCP: "203.0.113.10:17685", dir: SendRecv, ptime: 20},
		{file: "asterisk_offer.sdp", policy: Policy{RequireSRTP: true, Suites: []Suite{AESCM128HMACSHA132}, Codecs: []Codec{PCMA}},
			codec: PCMA, tag: 2, suite: AESCM128HMACSHA132, remote: "203.0.113.10:17684", remoteRTCP: "203.0.113.10:17685", dir: SendRecv, ptime: 20},
		// Seven suites before ours: AEAD_AES_128_GCM_8 must not be mistaken for AEAD_AES_128_GCM.
		{file: "freeswitch_offer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 5, suite: AESCM128HMACSHA180,
			remote: "198.51.100.7:24650", remoteRTCP: "198.51.100.7:24651", dir: SendRecv, ptime: 20},
		// Best-effort SRTP on RTP/AVP: answered in kind, and it runs SRTP.
		{file: "freeswitch_optional_avp_offer.sdp", policy: DefaultPolicy(), codec: PCMA, tag: 1, suite: AESCM128HMACSHA180,
			remote: "198.51.100.7:24660", remoteRTCP: "198.51.100.7:24661", dir: SendRecv, ptime: 20},
		// Offer order decides among suites in policy (RFC 4568 §7.1.1), so GCM (tag 2), not AES_CM.
		{file: "pjsip_gcm_multi_offer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 2, suite: AEADAES128GCM,
			remote: "192.0.2.50:4000", remoteRTCP: "192.0.2.50:4001", dir: SendRecv, ptime: 20},
		{file: "ipv6_offer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 7, suite: AESCM128HMACSHA180,
			remote: "[2001:db8::10]:50000", remoteRTCP: "[2001:db8::10]:50001", dir: SendRecv, ptime: 30},
		{file: "hold_sendonly_reoffer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 1, suite: AESCM128HMACSHA180,
			remote: "203.0.113.10:17684", remoteRTCP: "203.0.113.10:17685", dir: RecvOnly, ptime: 20},
		// RFC 2543 hold: c=0.0.0.0 with (implicit) sendrecv means "do not send to me".
		{file: "hold_c0_reoffer.sdp", policy: DefaultPolicy(), codec: PCMU, tag: 1, suite: AESCM128HMACSHA180,
			remote: "0.0.0.0:17684", remoteRTCP: "0.0.0.0:17685", dir: RecvOnly, ptime: 20},
		{file: "plain_rtp_offer.sdp", policy: Policy{}, codec: PCMU,
			remote: "203.0.113.10:17684", remoteRTCP: "203.0.113.10:17685", dir: SendRecv, ptime: 20},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			offer := readSample(t, tt.file)
			osd := &psdp.SessionDescription{}
			if err := osd.Unmarshal(offer); err != nil {
				t.Fatalf("sample does not parse: %v", err)
			}
			s := NewSession("dialtone", nil)
			answer, n, err := s.Answer(offer, local, tt.policy, nil)
			if err != nil {
				t.Fatalf("Answer: %v", err)
			}
			asd := checkWellFormed(t, answer, osd)
			if n.Codec != tt.codec || n.Direction != tt.dir || n.Ptime != tt.ptime {
				t.Errorf("codec %+v dir %s ptime %d; want %+v %s %d", n.Codec, n.Direction, n.Ptime, tt.codec, tt.dir, tt.ptime)
			}
			if n.Remote.String() != tt.remote || n.RemoteRTCP.String() != tt.remoteRTCP {
				t.Errorf("remote %v rtcp %v; want %s %s", n.Remote, n.RemoteRTCP, tt.remote, tt.remoteRTCP)
			}
			if n.Local != local || n.LocalRTCP.Port() != local.Port()+1 {
				t.Errorf("local %v rtcp %v", n.Local, n.LocalRTCP)
			}

			var audio *psdp.MediaDescription
			for i, md := range asd.MediaDescriptions {
				if md.MediaName.Port.Value != 0 {
					if audio != nil {
						t.Fatal("more than one accepted m= line")
					}
					audio = md
					if osd.MediaDescriptions[i].MediaName.Media != "audio" {
						t.Fatalf("accepted a %s stream", osd.MediaDescriptions[i].MediaName.Media)
					}
				}
			}
			if audio == nil || audio.MediaName.Port.Value != int(local.Port()) {
				t.Fatalf("no accepted audio at our port:\n%s", answer)
			}
			if got := audio.MediaName.Formats; len(got) != 1 || got[0] != fmt.Sprint(n.Codec.PT) {
				t.Errorf("answer formats %v, want [%d]", got, n.Codec.PT)
			}
			if v, _ := audio.Attribute(string(tt.dir)); v != "" || !hasAttr(audio, string(tt.dir)) {
				t.Errorf("answer lacks a=%s:\n%s", tt.dir, answer)
			}
			if !hasAttr(audio, "ptime") || !hasAttr(audio, "rtpmap") {
				t.Errorf("answer lacks a=ptime or a=rtpmap:\n%s", answer)
			}

			cryptos := attrs(audio, "crypto")
			if tt.tag == 0 {
				if n.SRTP || len(cryptos) != 0 || n.LocalKey != nil || n.RemoteKey != nil {
					t.Errorf("plain RTP answer has SRTP: %+v\n%s", n, answer)
				}
				return
			}
			if !n.SRTP || n.Suite != tt.suite {
				t.Errorf("SRTP %v suite %s; want true %s", n.SRTP, n.Suite, tt.suite)
			}
			if want := sampleCrypto(t, offer, tt.tag); !bytes.Equal(n.RemoteKey, want.Key) {
				t.Errorf("remote key is not the offered tag-%d key", tt.tag)
			}
			if len(cryptos) != 1 {
				t.Fatalf("answer has %d a=crypto, want 1", len(cryptos))
			}
			ours, err := ParseCrypto(cryptos[0])
			if err != nil {
				t.Fatalf("our a=crypto does not parse: %v", err)
			}
			if ours.Tag != tt.tag || ours.Suite != tt.suite || !bytes.Equal(ours.Key, n.LocalKey) {
				t.Errorf("answer crypto %d %s; want tag %d %s carrying LocalKey", ours.Tag, ours.Suite, tt.tag, tt.suite)
			}
			if bytes.Equal(n.LocalKey, n.RemoteKey) {
				t.Error("local key reuses the remote key")
			}
		})
	}
}

func hasAttr(md *psdp.MediaDescription, key string) bool {
	_, ok := md.Attribute(key)
	return ok
}

func attrs(md *psdp.MediaDescription, key string) []string {
	var out []string
	for _, a := range md.Attributes {
		if a.Key == key {
			out = append(out, a.Value)
		}
	}
	return out
}

// offerSDP builds an offer around one audio media section given as lines.
func offerSDP(media ...string) []byte {
	head := "v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n"
	return []byte(head + strings.Join(media, "\r\n") + "\r\n")
}

const goodCrypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30

func TestAnswerRefusals(t *testing.T) {
	m := "m=audio 5004 RTP/SAVP 0"
	tests := []struct {
		name   string
		offer  []byte
		policy Policy
		status int
		reason string
	}{
		{"empty", nil, DefaultPolicy(), 400, "empty"},
		{"too large", append(offerSDP(m, goodCrypto), bytes.Repeat([]byte("a=x:y\r\n"), MaxSize/7)...), DefaultPolicy(), 400, "larger than"},
		{"not sdp", []byte("hello\r\n"), DefaultPolicy(), 400, "syntax"},
		{"no media", offerSDP(), DefaultPolicy(), 488, "no active audio"},
		{"only video", offerSDP("m=video 5006 RTP/SAVP 96", "a=rtpmap:96 H264/90000", goodCrypto), DefaultPolicy(), 488, "no active audio"},
		{"audio port 0", offerSDP("m=audio 0 RTP/SAVP 0", goodCrypto), DefaultPolicy(), 488, "no active audio"},
		{"plain rtp", readSample(t, "plain_rtp_offer.sdp"), DefaultPolicy(), 488, "plain RTP offered, SRTP required"},
		{"dtls-srtp", offerSDP("m=audio 5004 UDP/TLS/RTP/SAVP 0", "a=fingerprint:sha-256 AB:CD"), DefaultPolicy(), 488, "transport UDP/TLS/RTP/SAVP not supported"},
		{"savpf", offerSDP("m=audio 5004 RTP/SAVPF 0", goodCrypto), DefaultPolicy(), 488, "transport RTP/SAVPF"},
		{"no crypto", offerSDP(m), DefaultPolicy(), 488, "no a=crypto"},
		{"only unsupported suites", offerSDP(m,
			"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:"+key46,
			"a=crypto:2 F8_128_HMAC_SHA1_80 inline:"+key30), DefaultPolicy(), 488, "crypto suite AES_256_CM_HMAC_SHA1_80 not supported"},
		{"suite outside policy", offerSDP(m, goodCrypto), Policy{RequireSRTP: true, Suites: []Suite{AEADAES128GCM}}, 488, "crypto suite AES_CM_128_HMAC_SHA1_80 not supported"},
		{"kdr", offerSDP(m, goodCrypto+" KDR=20"), DefaultPolicy(), 488, "key derivation rate not supported"},
		{"kdr zero", offerSDP(m, goodCrypto+" KDR=0"), DefaultPolicy(), 488, "key derivation rate not supported"},
		{"unencrypted srtp", offerSDP(m, goodCrypto+" UNENCRYPTED_SRTP"), DefaultPolicy(), 488, "UNENCRYPTED_SRTP would downgrade"},
		{"unencrypted srtcp", offerSDP(m, goodCrypto+" UNENCRYPTED_SRTCP"), DefaultPolicy(), 488, "UNENCRYPTED_SRTCP would downgrade"},
		{"unauthenticated srtp", offerSDP(m, goodCrypto+" UNAUTHENTICATED_SRTP"), DefaultPolicy(), 488, "UNAUTHENTICATED_SRTP would downgrade"},
		{"unknown session param", offerSDP(m, goodCrypto+" FOO=1"), DefaultPolicy(), 488, "unknown crypto session parameter FOO"},
		{"wrong key length", offerSDP(m, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key28), DefaultPolicy(), 488, "key is 28 bytes, want 30"},
		{"mki", offerSDP(m, goodCrypto+"|2^31|1:4"), DefaultPolicy(), 488, "mki not supported"},
		{"multiple keys", offerSDP(m, goodCrypto+"|2^31|1:4;inline:"+key30+"|2^31|2:4"), DefaultPolicy(), 488, "multiple master keys"},
		{"short lifetime", offerSDP(m, goodCrypto+"|2^16"), DefaultPolicy(), 488, "lifetime 65536 below 2^20"},
		{"malformed crypto", offerSDP(m, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%%%"), DefaultPolicy(), 400, "base64"},
		{"no common codec", offerSDP("m=audio 5004 RTP/SAVP 9 18", goodCrypto), DefaultPolicy(), 488, "no common codec"},
		{"stereo pcmu", offerSDP("m=audio 5004 RTP/SAVP 96", "a=rtpmap:96 PCMU/8000/2", goodCrypto), DefaultPolicy(), 488, "no common codec"},
		{"codec outside policy", offerSDP("m=audio 5004 RTP/SAVP 8", goodCrypto), Policy{RequireSRTP: true, Codecs: []Codec{PCMU}}, 488, "no common codec"},
		{"bad payload type", offerSDP("m=audio 5004 RTP/SAVP 0 200", goodCrypto), DefaultPolicy(), 400, "payload type"},
		{"no connection", []byte("v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\ns=-\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\n" + goodCrypto + "\r\n"), DefaultPolicy(), 400, "no c= line"},
		{"hostname", []byte("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\n" + goodCrypto + "\r\n"), DefaultPolicy(), 488, "not an ip literal"},
		{"multicast", []byte("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\n" + goodCrypto + "\r\n"), DefaultPolicy(), 488, "multicast"},
		{"addrtype mismatch", []byte("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 2001:db8::1\r\nt=0 0\r\nm=audio 5004 RTP/SAVP 0\r\n" + goodCrypto + "\r\n"), DefaultPolicy(), 400, "IP4 with address"},
		{"bad rtcp", offerSDP(m, "a=rtcp:0", goodCrypto), DefaultPolicy(), 400, "a=rtcp port"},
		{"port range", offerSDP("m=audio 5004/2 RTP/SAVP 0", goodCrypto), DefaultPolicy(), 488, "port ranges"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			answer, _, err := NewSession("dialtone", nil).Answer(tt.offer, local, tt.policy, nil)
			if answer != nil {
				t.Errorf("got an answer along with the refusal:\n%s", answer)
			}
			checkNegErr(t, err, tt.status, tt.reason)
		})
	}
}

func TestAnswerSkipsUnusableForUsable(t *testing.T) {
	// Earlier attributes we cannot use (KDR, MKI, unknown suite) do not spoil a later good one, and a
	// plain stream before an SRTP one is passed over rather than refused.
	offer := []byte("v=0\r\no=- 1 1 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n" +
		"m=audio 5000 RTP/AVP 0\r\n" +
		"m=audio 5004 RTP/SAVP 0\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + " KDR=1\r\n" +
		"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "|2^31|1:4\r\n" +
		"a=crypto:3 NULL_HMAC_SHA1_80 opaque-key-format\r\n" +
		"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:" + key30 + "|2^31 -VENDOR_X=1 WSH=64\r\n")
	answer, n, err := NewSession("", nil).Answer(offer, local, DefaultPolicy(), nil)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	if n.Suite != AESCM128HMACSHA132 || n.Remote.Port() != 5004 {
		t.Errorf("picked %s on port %d, want AES_CM_128_HMAC_SHA1_32 on 5004", n.Suite, n.Remote.Port())
	}
	if !bytes.Contains(answer, []byte("m=audio 0 RTP/AVP 0\r\nm=audio 40000 RTP/SAVP 0\r\n")) ||
		!bytes.Contains(answer, []byte("a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:")) {
		t.Errorf("answer:\n%s", answer)
	}
	if !bytes.Contains(answer, []byte("o=- ")) {
		t.Errorf("empty user not replaced by -:\n%s", answer)
	}

	// With MKI allowed, the MKI key is taken and its MKI reported for the media layer.
	p := DefaultPolicy()
	p.AllowMKI = true
	_, n, err = NewSession("", nil).Answer(offer, local, p, nil)
	if err != nil || n.Suite != AESCM128HMACSHA180 || !bytes.Equal(n.RemoteMKI, []byte{0, 0, 0, 1}) {
		t.Errorf("AllowMKI: %+v, %v", n, err)
	}
}

func TestBestEffortFallsBackOnlyWhenAllowed(t *testing.T) {
	offer := offerSDP("m=audio 5004 RTP/AVP 0", "a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:"+key46)
	_, _, err := NewSession("", nil).Answer(offer, local, DefaultPolicy(), nil)
	checkNegErr(t, err, 488, "crypto suite AES_256_CM_HMAC_SHA1_80 not supported")

	answer, n, err := NewSession("", nil).Answer(offer, local, Policy{}, nil)
	if err != nil || n.SRTP || bytes.Contains(answer, []byte("a=crypto")) {
		t.Errorf("plain fallback: %+v, %v\n%s", n, err, answer)
	}
}

// pair runs offer → answer → accept between two Sessions and returns both sides' results.
func pair(t *testing.T, a, b *Session, offered Media, pa, pb Policy) (offer, answer []byte, na, nb Negotiated) {
	t.Helper()
	offer, err := a.Offer(offered)
	if err != nil {
		t.Fatalf("Offer: %v", err)
	}
	checkWellFormed(t, offer, nil)
	answer, nb, err = b.Answer(offer, netip.MustParseAddrPort("198.51.100.20:30000"), pb, nil)
	if err != nil {
		t.Fatalf("Answer: %v\n%s", err, offer)
	}
	na, err = a.Accept(answer, offered, pa)
	if err != nil {
		t.Fatalf("Accept: %v\n%s", err, answer)
	}
	return offer, answer, na, nb
}

func ourOffer(t *testing.T, suites ...Suite) Media {
	t.Helper()
	m := Media{RTP: local, Codecs: []Codec{PCMU, PCMA}}
	for i, s := range suites {
		c, err := NewCrypto(i+1, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.Cryptos = append(m.Cryptos, c)
	}
	return m
}

func TestOfferAnswerAccept(t *testing.T) {
	a, b := NewSession("alice", nil), NewSession("bob", nil)
	offered := ourOffer(t, DefaultSuites...)
	_, _, na, nb := pair(t, a, b, offered, DefaultPolicy(), DefaultPolicy())

	if na.Suite != AEADAES128GCM || nb.Suite != AEADAES128GCM {
		t.Errorf("suites %s/%s, want AEAD_AES_128_GCM (first offered)", na.Suite, nb.Suite)
	}
	if !bytes.Equal(na.LocalKey, nb.RemoteKey) || !bytes.Equal(na.RemoteKey, nb.LocalKey) {
		t.Error("keys do not cross over between the two sides")
	}
	if !bytes.Equal(na.LocalKey, offered.Cryptos[0].Key) {
		t.Error("offerer's local key is not its offered tag-1 key")
	}
	if na.Remote != nb.Local || nb.Remote != na.Local || na.RemoteRTCP != nb.LocalRTCP || nb.RemoteRTCP != na.LocalRTCP {
		t.Errorf("addresses do not cross over: %+v / %+v", na, nb)
	}
	if na.Codec != PCMU || nb.Codec != PCMU || na.Direction != SendRecv || nb.Direction != SendRecv || !na.SRTP || !nb.SRTP {
		t.Errorf("a %+v\nb %+v", na, nb)
	}

	// Suite restricted on the answering side: it skips GCM and takes tag 2.
	_, _, na, nb = pair(t, NewSession("a", nil), NewSession("b", nil), ourOffer(t, DefaultSuites...),
		DefaultPolicy(), Policy{RequireSRTP: true, Suites: []Suite{AESCM128HMACSHA180}})
	if na.Suite != AESCM128HMACSHA180 || !bytes.Equal(na.LocalKey, nb.RemoteKey) {
		t.Errorf("restricted: %s", na.Suite)
	}

	// IPv6 end to end.
	v6 := ourOffer(t, AESCM128HMACSHA180)
	v6.RTP = netip.MustParseAddrPort("[2001:db8::7]:41000")
	offer, err := NewSession("a", nil).Offer(v6)
	if err != nil || !bytes.Contains(offer, []byte("c=IN IP6 2001:db8::7\r\n")) || !bytes.Contains(offer, []byte(" IN IP6 2001:db8::7\r\n")) {
		t.Errorf("IPv6 offer: %v\n%s", err, offer)
	}
	_, n, err := NewSession("b", nil).Answer(offer, netip.MustParseAddrPort("[2001:db8::8]:42000"), DefaultPolicy(), nil)
	if err != nil || n.Remote != v6.RTP {
		t.Errorf("IPv6 answer: %+v, %v", n, err)
	}
}

func TestHoldAndVersions(t *testing.T) {
	a, b := NewSession("alice", nil), NewSession("bob", nil)
	offered := ourOffer(t, AESCM128HMACSHA180)
	o1, _, _, _ := pair(t, a, b, offered, DefaultPolicy(), DefaultPolicy())
	v1 := originVersion(t, o1)

	// Same description again (a session refresh): same version.
	o2, err := a.Offer(offered)
	if err != nil || originVersion(t, o2) != v1 || !bytes.Equal(o1, o2) {
		t.Errorf("unchanged re-offer changed: v%d → v%d, %v", v1, originVersion(t, o2), err)
	}

	tests := []struct {
		ours, theirs Direction
	}{
		{SendOnly, RecvOnly},
		{Inactive, Inactive},
		{RecvOnly, SendOnly},
		{SendRecv, SendRecv},
	}
	last := v1
	for _, tt := range tests {
		offered.Direction = tt.ours
		offer, answer, na, nb := pair(t, a, b, offered, DefaultPolicy(), DefaultPolicy())
		if v := originVersion(t, offer); v != last+1 {
			t.Errorf("%s re-offer has version %d, want %d", tt.ours, v, last+1)
		}
		last++
		if nb.Direction != tt.theirs || na.Direction != tt.ours {
			t.Errorf("offer %s: answerer %s, offerer %s; want %s, %s", tt.ours, nb.Direction, na.Direction, tt.theirs, tt.ours)
		}
		if !bytes.Contains(answer, []byte("a="+string(tt.theirs)+"\r\n")) {
			t.Errorf("answer lacks a=%s:\n%s", tt.theirs, answer)
		}
	}

	// The answerer's own version also climbs with each answer it sends (fresh keys each time).
	b2 := NewSession("bob", nil)
	offer, _ := NewSession("a", nil).Offer(ourOffer(t, AESCM128HMACSHA180))
	x, _, _ := b2.Answer(offer, local, DefaultPolicy(), nil)
	y, _, _ := b2.Answer(offer, local, DefaultPolicy(), nil)
	if originVersion(t, y) != originVersion(t, x)+1 || originID(t, x) != originID(t, y) {
		t.Errorf("answer versions %d then %d", originVersion(t, x), originVersion(t, y))
	}
}

func originVersion(t *testing.T, b []byte) uint64 {
	t.Helper()
	sd := &psdp.SessionDescription{}
	if err := sd.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return sd.Origin.SessionVersion
}

func originID(t *testing.T, b []byte) uint64 {
	t.Helper()
	sd := &psdp.SessionDescription{}
	if err := sd.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return sd.Origin.SessionID
}

func TestAcceptRefusals(t *testing.T) {
	offered := ourOffer(t, AEADAES128GCM, AESCM128HMACSHA180)
	offered.Cryptos[1].Key = mustB64(t, key30)
	answer := func(media ...string) []byte {
		return []byte("v=0\r\no=- 5 5 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n" + strings.Join(media, "\r\n") + "\r\n")
	}
	m := "m=audio 30000 RTP/SAVP 0"
	ans2 := "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + key30
	tests := []struct {
		name   string
		answer []byte
		status int
		reason string
	}{
		{"rejected", answer("m=audio 0 RTP/SAVP 0"), 488, "rejected by peer"},
		{"no audio", answer("m=video 30000 RTP/SAVP 96"), 400, "no audio"},
		{"downgrade to avp", answer("m=audio 30000 RTP/AVP 0"), 488, "answer transport RTP/AVP differs"},
		{"no crypto", answer(m), 488, "no a=crypto in SRTP answer"},
		{"tag not offered", answer(m, "a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:"+key30), 488, "tag 9 was not offered"},
		{"suite changed", answer(m, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30), 488, "changes suite"},
		{"two cryptos", answer(m, ans2, ans2), 488, "2 crypto attributes"},
		{"kdr", answer(m, ans2+" KDR=24"), 488, "key derivation rate"},
		{"unencrypted srtcp", answer(m, ans2+" UNENCRYPTED_SRTCP"), 488, "downgrade"},
		{"mki", answer(m, ans2+"|2^31|7:2"), 488, "mki not supported"},
		{"codec not offered", answer("m=audio 30000 RTP/SAVP 9", ans2), 488, "no common codec"},
		{"malformed", []byte("v=0\r\nbogus\r\n"), 400, "syntax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSession("", nil).Accept(tt.answer, offered, DefaultPolicy())
			checkNegErr(t, err, tt.status, tt.reason)
		})
	}

	// And the good case of the same shape, holding the peer on c=0.0.0.0: we must not send.
	n, err := NewSession("", nil).Accept([]byte(strings.Replace(string(answer(m, ans2)), "198.51.100.20\r\nt=", "0.0.0.0\r\nt=", 1)), offered, DefaultPolicy())
	if err != nil || n.Direction != RecvOnly || n.Suite != AESCM128HMACSHA180 || !bytes.Equal(n.LocalKey, offered.Cryptos[1].Key) {
		t.Errorf("Accept: %+v, %v", n, err)
	}

	// Plain RTP on our side is refused when the policy wants SRTP, accepted when it allows it.
	plain := Media{RTP: local, Proto: ProtoAVP, Codecs: []Codec{PCMU}}
	_, err = NewSession("", nil).Accept(answer("m=audio 30000 RTP/AVP 0"), plain, DefaultPolicy())
	checkNegErr(t, err, 488, "plain RTP answered")
	if n, err := NewSession("", nil).Accept(answer("m=audio 30000 RTP/AVP 0"), plain, Policy{}); err != nil || n.SRTP {
		t.Errorf("plain Accept: %+v, %v", n, err)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOfferGolden(t *testing.T) {
	// A fixed "random" source makes session id and keys reproducible.
	rnd := bytes.NewReader(bytes.Repeat([]byte{0x5a, 0xa5, 0x3c, 0xc3}, 64))
	s := NewSession("dialtone", rnd)
	m := Media{RTP: local, Codecs: []Codec{PCMU, PCMA}}
	for i, suite := range DefaultSuites {
		c, err := NewCrypto(i+1, suite, rnd)
		if err != nil {
			t.Fatal(err)
		}
		m.Cryptos = append(m.Cryptos, c)
	}
	got, err := s.Offer(m)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "offer.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readSample(t, "offer.golden")
	if !bytes.Equal(got, want) {
		t.Errorf("offer differs from %s (go test -run TestOfferGolden -update to accept):\n%s", golden, got)
	}
	for _, line := range []string{"m=audio 40000 RTP/SAVP 0 8\r\n", "a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:8 PCMA/8000\r\n",
		"a=ptime:20\r\n", "a=sendrecv\r\n", "c=IN IP4 192.0.2.10\r\n", "t=0 0\r\n", "a=crypto:1 AEAD_AES_128_GCM inline:"} {
		if !bytes.Contains(got, []byte(line)) {
			t.Errorf("offer lacks %q", line)
		}
	}
	if bytes.Contains(got, []byte("a=rtcp:")) {
		t.Error("offer has a=rtcp though RTCP is on the default port")
	}

	// A non-default RTCP port is announced.
	m.RTCP = netip.MustParseAddrPort("192.0.2.10:40007")
	got, _ = NewSession("", nil).Offer(m)
	if !bytes.Contains(got, []byte("a=rtcp:40007\r\n")) {
		t.Errorf("no a=rtcp:40007:\n%s", got)
	}
}

func TestOfferRefusesBadLocal(t *testing.T) {
	good := ourOffer(t, AESCM128HMACSHA180)
	tests := []struct {
		name string
		mod  func(*Media)
	}{
		{"no address", func(m *Media) { m.RTP = netip.AddrPort{} }},
		{"port 0", func(m *Media) { m.RTP = netip.MustParseAddrPort("192.0.2.10:0") }},
		{"unspecified", func(m *Media) { m.RTP = netip.MustParseAddrPort("0.0.0.0:4000") }},
		{"savp without crypto", func(m *Media) { m.Cryptos = nil }},
		{"bad proto", func(m *Media) { m.Proto = "UDP/TLS/RTP/SAVP" }},
		{"short key", func(m *Media) { m.Cryptos[0].Key = m.Cryptos[0].Key[:16] }},
		{"no codecs", func(m *Media) { m.Codecs = nil }},
		{"bad direction", func(m *Media) { m.Direction = "both" }},
		{"bad ptime", func(m *Media) { m.Ptime = 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			m.Cryptos = append([]Crypto(nil), good.Cryptos...)
			tt.mod(&m)
			if _, err := NewSession("", nil).Offer(m); !errors.Is(err, ErrLocal) {
				t.Errorf("Offer = %v, want ErrLocal", err)
			}
		})
	}
	if _, _, err := NewSession("", nil).Answer(readSample(t, "asterisk_offer.sdp"), netip.AddrPort{}, DefaultPolicy(), nil); err == nil {
		t.Error("Answer accepted an invalid local address")
	}
}
