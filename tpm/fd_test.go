package tpm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
)

// pair returns our end of a socket pair as an fdTPM and the peer's end.
// SOCK_SEQPACKET keeps message boundaries as a TPM device does.
func pair(t *testing.T, typ int) (*fdTPM, *os.File) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := &fdTPM{fd: fds[0], stream: typ == syscall.SOCK_STREAM}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() {
		if err := ours.Close(); err != nil {
			t.Error(err)
		}
		if err := peer.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			t.Error(err)
		}
	})
	return ours, peer
}

var (
	testCmd = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 8} // GetRandom(8)
	testRsp = []byte{0x80, 0x01, 0, 0, 0, 0x14, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}
)

// serve answers one command with the given writes and reports what it read.
func serve(peer *os.File, writes ...[]byte) chan []byte {
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 4096)
		n, err := peer.Read(buf)
		if err != nil {
			got <- nil
			return
		}
		got <- buf[:n]
		for _, w := range writes {
			if _, err := peer.Write(w); err != nil {
				return
			}
		}
	}()
	return got
}

func TestFDDevice(t *testing.T) {
	ours, peer := pair(t, syscall.SOCK_SEQPACKET)
	got := serve(peer, testRsp)
	rsp, err := ours.Send(testCmd)
	if err != nil || !bytes.Equal(rsp, testRsp) {
		t.Fatalf("Send = %x, %v; want %x", rsp, err, testRsp)
	}
	if cmd := <-got; !bytes.Equal(cmd, testCmd) {
		t.Errorf("the device got %x, want %x", cmd, testCmd)
	}
	// The response is ours to keep: the next read must not change it.
	got = serve(peer, []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 1})
	if _, err := ours.Send(testCmd); err != nil {
		t.Fatal(err)
	}
	<-got
	if !bytes.Equal(rsp, testRsp) {
		t.Errorf("an earlier response changed to %x", rsp)
	}
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
	// Whichever of these the kernel gives, connErr reports the TPM lost.
	if _, err := ours.Send(testCmd); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Send to a closed device: %v, want EOF, EPIPE or ECONNRESET", err)
	}
}

func TestFDStream(t *testing.T) {
	ours, peer := pair(t, syscall.SOCK_STREAM)
	// The response arrives in pieces, the header split.
	got := serve(peer, testRsp[:4], testRsp[4:13], testRsp[13:])
	rsp, err := ours.Send(testCmd)
	if err != nil || !bytes.Equal(rsp, testRsp) {
		t.Fatalf("Send = %x, %v; want %x", rsp, err, testRsp)
	}
	<-got
	// A peer that closes mid-response.
	got = serve(peer, testRsp[:12])
	closed := make(chan error, 1)
	go func() {
		<-got
		closed <- peer.Close()
	}()
	if _, err := ours.Send(testCmd); !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("truncated response: %v, want an EOF", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// Writing to a peer that is gone is EPIPE, not a SIGPIPE that kills
	// the test.
	if _, err := ours.Send(testCmd); !errors.Is(err, syscall.EPIPE) && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Send after the peer left: %v, want EPIPE", err)
	}
	if err := ours.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ours.Send(testCmd); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close: %v, want os.ErrClosed", err)
	}
}

func TestFDStreamBadSize(t *testing.T) {
	ours, peer := pair(t, syscall.SOCK_STREAM)
	serve(peer, []byte{0x80, 0x01, 0, 0, 0, 5, 0, 0, 0, 0})
	if _, err := ours.Send(testCmd); err == nil {
		t.Fatal("a response claiming 5 bytes was accepted")
	}
}
