package tpm

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/dialtone-dev/dialtone/internal/testutil"
	"github.com/google/go-tpm/tpm2"
)

func TestOpenSpecs(t *testing.T) {
	for _, spec := range []string{"", "simulator", "device:", "swtpm:nohostport", "usb:/dev/x"} {
		if _, err := Open(context.Background(), spec); !errors.Is(err, ErrSpec) {
			t.Errorf("Open(%q) = %v, want ErrSpec", spec, err)
		}
	}
	if _, err := Open(context.Background(), "device:/nonexistent/tpmrm0"); err == nil {
		t.Error("opening a missing device succeeded")
	}
}

func TestNVSpaceOnSwtpm(t *testing.T) {
	sw := testutil.StartSwtpm(t)
	open := func() *NVSpace {
		tp, err := Open(context.Background(), sw.Spec)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		return &NVSpace{TPM: tp, Index: tpm2.TPMHandle(0x01500101), Size: 8}
	}
	nv := open()
	if _, err := nv.Read(); !errors.Is(err, ErrNVUndefined) {
		t.Fatalf("read before define: %v, want ErrNVUndefined", err)
	}
	if err := nv.Define(); err != nil {
		t.Fatal(err)
	}
	if err := nv.Define(); err != nil {
		t.Fatalf("defining twice: %v", err)
	}
	if _, err := nv.Read(); !errors.Is(err, ErrNVUndefined) {
		t.Fatalf("read before write: %v, want ErrNVUndefined", err)
	}
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := nv.Write(want); err != nil {
		t.Fatal(err)
	}
	if err := nv.Write([]byte{1}); err == nil {
		t.Fatal("short write accepted")
	}
	// The value survives the TPM's restart (a reboot of the phone).
	sw.Kill()
	sw.Start()
	nv = open()
	got, err := nv.Read()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after restart read %x, %v; want %x", got, err, want)
	}
	other := &NVSpace{TPM: nv.TPM, Index: nv.Index, Size: 16}
	if err := other.Define(); err == nil {
		t.Fatal("redefining with another size succeeded")
	}
}
