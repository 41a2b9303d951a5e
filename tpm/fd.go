package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// fdTPM talks to a TPM over a file descriptor with plain blocking system
// calls: a swtpm socket (stream: a response is framed by its header) or a
// TPM character device (one write per command, one read per response).
//
// Not through Go's network poller, on purpose. The module runs on threads
// of the program that loaded it, and Go locks each such call to its
// thread; a goroutine that waits in the poller must hand that thread off
// and be handed back to it when the TPM answers, two thread switches per
// read that cost more than the rest of the module together. A blocking
// read keeps the thread. Socket timeouts (SO_RCVTIMEO, SO_SNDTIMEO) bound
// every wait instead of deadlines.
type fdTPM struct {
	fd     int
	stream bool
	closed bool
	// buf receives a device's responses, whose size is known only once
	// read; kept so a signature does not allocate 64 KiB.
	buf []byte
}

func (t *fdTPM) Send(cmd []byte) ([]byte, error) {
	if t.closed {
		return nil, os.ErrClosed
	}
	if err := t.write(cmd); err != nil {
		return nil, err
	}
	if !t.stream {
		if t.buf == nil {
			t.buf = make([]byte, maxResponse)
		}
		n, err := t.read(t.buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, io.EOF
		}
		return bytes.Clone(t.buf[:n]), nil
	}
	hdr := make([]byte, 10)
	if err := t.readFull(hdr, io.EOF); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("malformed response: size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if err := t.readFull(rsp[10:], io.ErrUnexpectedEOF); err != nil {
		return nil, err
	}
	return rsp, nil
}

// write writes all of b. On a socket it uses MSG_NOSIGNAL: a swtpm that
// went away must give EPIPE, never a SIGPIPE in the host program.
func (t *fdTPM) write(b []byte) error {
	for len(b) > 0 {
		var n int
		var err error
		if t.stream {
			n, err = syscall.SendmsgN(t.fd, b, nil, nil, syscall.MSG_NOSIGNAL)
		} else {
			n, err = syscall.Write(t.fd, b)
		}
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return os.ErrDeadlineExceeded
		case err != nil:
			return os.NewSyscallError("write", err)
		case n == 0:
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// read is one read(2), retried when a signal interrupts it.
func (t *fdTPM) read(b []byte) (int, error) {
	for {
		n, err := syscall.Read(t.fd, b)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		}
		return n, nil
	}
}

// readFull fills b; eof is the error for a peer that closed before the
// first byte.
func (t *fdTPM) readFull(b []byte, eof error) error {
	for got := 0; got < len(b); {
		n, err := t.read(b[got:])
		if err != nil {
			return err
		}
		if n == 0 {
			if got == 0 {
				return eof
			}
			return io.ErrUnexpectedEOF
		}
		got += n
	}
	return nil
}

func (t *fdTPM) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	if err := syscall.Close(t.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// dialSocket connects to swtpm's data channel (a unix socket path, or
// host:port over TCP) with a blocking connect(2). On a unix socket that
// waits in the kernel until swtpm has room for us in its listen queue:
// it serves one client at a time and takes the next only when the last
// one is done, so right after our own previous operation the queue is
// often full, and a non-blocking connect would fail with EAGAIN and could
// only poll. SO_SNDTIMEO bounds the wait, SO_RCVTIMEO and SO_SNDTIMEO
// every later command.
func dialSocket(spec Spec) (*fdTPM, error) {
	var sa syscall.Sockaddr
	family := syscall.AF_UNIX
	if spec.Kind == SwtpmUnix {
		sa = &syscall.SockaddrUnix{Name: spec.Path}
	} else {
		addr, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(spec.Host, fmt.Sprint(spec.Port)))
		if err != nil {
			return nil, err
		}
		if ip4 := addr.IP.To4(); ip4 != nil {
			family = syscall.AF_INET
			sa = &syscall.SockaddrInet4{Port: addr.Port, Addr: [4]byte(ip4)}
		} else {
			family = syscall.AF_INET6
			sa = &syscall.SockaddrInet6{Port: addr.Port, Addr: [16]byte(addr.IP.To16())}
		}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (*fdTPM, error) { return nil, errors.Join(err, syscall.Close(fd)) }
	if err := setTimeout(fd, syscall.SO_SNDTIMEO, dialTimeout); err != nil {
		return fail(err)
	}
	for {
		err = syscall.Connect(fd, sa)
		// With a send timeout set, a signal interrupts the wait with
		// EINTR before the connection is made; try again. A TCP connect
		// may have gone on in the background: EISCONN then means done.
		if !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EALREADY) {
			break
		}
	}
	switch {
	case err == nil, errors.Is(err, syscall.EISCONN):
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINPROGRESS):
		// The send timeout ran out while waiting.
		return fail(os.ErrDeadlineExceeded)
	default:
		return fail(os.NewSyscallError("connect", err))
	}
	if family != syscall.AF_UNIX {
		// Commands are small and answered one at a time.
		if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
			return fail(os.NewSyscallError("setsockopt", err))
		}
	}
	if err := setTimeout(fd, syscall.SO_SNDTIMEO, ioTimeout); err != nil {
		return fail(err)
	}
	if err := setTimeout(fd, syscall.SO_RCVTIMEO, ioTimeout); err != nil {
		return fail(err)
	}
	return &fdTPM{fd: fd, stream: true}, nil
}

func setTimeout(fd, opt int, d time.Duration) error {
	tv := syscall.NsecToTimeval(d.Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	return nil
}
