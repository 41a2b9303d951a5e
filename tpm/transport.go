package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// maxResponse bounds a response read from a stream; TPM responses are
// limited by TPM_PT_MAX_RESPONSE_SIZE, a few KiB on every TPM we know.
const maxResponse = 64 << 10

// ioTimeout bounds one command on a socket: long enough for an RSA-4096
// key generation on a slow TPM, short enough that a wedged peer cannot
// hang the program forever.
const ioTimeout = 3 * time.Minute

// streamTPM sends raw TPM commands over a stream socket (swtpm's data
// channel) and reads one framed response per command.
type streamTPM struct {
	conn net.Conn
}

func (s *streamTPM) Send(cmd []byte) ([]byte, error) {
	if err := s.conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return nil, err
	}
	if _, err := s.conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("malformed response: size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.conn, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

func (s *streamTPM) Close() error { return s.conn.Close() }

// deviceTPM talks to a TPM character device: one write per command, one
// read returns the whole response (the kernel driver's contract).
type deviceTPM struct {
	f *os.File
}

func (d *deviceTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := d.f.Write(cmd); err != nil {
		return nil, err
	}
	buf := make([]byte, maxResponse)
	n, err := d.f.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (d *deviceTPM) Close() error { return d.f.Close() }

// Bounds for retrying TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING,
// which a TPM answers when it cannot run a command right now (a fresh
// swtpm answers RETRY to its first signature). tpm2-tss retries these too.
const (
	maxRetries   = 30
	retryDelay   = time.Millisecond
	maxRetryWait = 100 * time.Millisecond
)

// startupClear is TPM2_Startup(TPM_SU_CLEAR), sent when a TPM that was
// never started answers TPM_RC_INITIALIZE (a swtpm started without
// --flags startup-clear).
var startupClear = []byte{0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x44, 0, 0}

// retrying resends a command while the TPM answers a retry warning. The
// command is unchanged: the TPM did not execute it, so session nonces and
// HMACs are still valid.
type retrying struct {
	transport.TPMCloser
	sleep func(time.Duration)
}

func (r retrying) Send(cmd []byte) ([]byte, error) {
	delay := retryDelay
	started := false
	for attempt := 0; ; attempt++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil {
			return nil, err
		}
		switch rc := responseCode(rsp); {
		case rc == tpm2.TPMRCInitialize && !started:
			started = true
			if _, err := r.TPMCloser.Send(startupClear); err != nil {
				return nil, err
			}
			continue
		case rc != tpm2.TPMRCRetry && rc != tpm2.TPMRCYielded && rc != tpm2.TPMRCTesting:
			return rsp, nil
		case attempt == maxRetries:
			return rsp, nil
		}
		r.sleep(delay)
		delay = min(delay*2, maxRetryWait)
	}
}

// dial opens the transport a spec names, with errors that say what to do.
func dial(spec Spec) (transport.TPMCloser, error) {
	switch spec.Kind {
	case SwtpmUnix, SwtpmTCP:
		var c net.Conn
		var err error
		if spec.Kind == SwtpmUnix {
			c, err = dialUnix(spec.Path, dialTimeout)
		} else {
			c, err = net.DialTimeout("tcp", net.JoinHostPort(spec.Host, fmt.Sprint(spec.Port)), dialTimeout)
		}
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, newErr(ErrPermission, err, "check the socket's owner and mode",
					"permission denied connecting to swtpm at %s", spec)
			}
			return nil, newErr(ErrUnreachable, err,
				"start swtpm, or point --tpm / "+EnvSpec+" at the right socket",
				"swtpm not reachable at %s: %s", spec, causeText(err))
		}
		return &streamTPM{conn: c}, nil
	default:
		f, err := openDevice(spec)
		if err != nil {
			return nil, err
		}
		return &deviceTPM{f: f}, nil
	}
}

// dialTimeout bounds connecting to swtpm, including the wait for it to
// take us from its listen queue.
const dialTimeout = 10 * time.Second

// dialUnix connects to a unix socket with a blocking connect(2), which
// waits in the kernel until the listener has room for us. swtpm serves
// one client at a time and takes the next only when the last one is
// done, so right after our own previous operation its queue is often
// full: a non-blocking connect (what net.Dial does) then fails with
// EAGAIN and could only poll. SO_SNDTIMEO bounds the wait.
func dialUnix(path string, timeout time.Duration) (net.Conn, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
		return nil, errors.Join(os.NewSyscallError("setsockopt", err), syscall.Close(fd))
	}
	addr := &syscall.SockaddrUnix{Name: path}
	for {
		err = syscall.Connect(fd, addr)
		// With a send timeout set, a signal interrupts the wait with
		// EINTR; the connection was not made yet, so try again.
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	switch {
	case errors.Is(err, syscall.EAGAIN):
		// The send timeout ran out while queued.
		err = os.ErrDeadlineExceeded
	case err != nil:
		err = os.NewSyscallError("connect", err)
	}
	if err != nil {
		return nil, errors.Join(err, syscall.Close(fd))
	}
	f := os.NewFile(uintptr(fd), path)
	c, err := net.FileConn(f)
	// FileConn works on a duplicate; the original descriptor is ours to
	// close either way.
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
		if c != nil {
			err = errors.Join(err, c.Close())
		}
		c = nil
	}
	return c, err
}

func openDevice(spec Spec) (*os.File, error) {
	paths := []string{spec.Path}
	if spec.Fallback && spec.Path == DeviceRM {
		paths = append(paths, DeviceRaw)
	}
	for i, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		switch {
		case err == nil:
			return f, nil
		case errors.Is(err, os.ErrNotExist) && i+1 < len(paths):
			continue
		case errors.Is(err, os.ErrNotExist):
			return nil, newErr(ErrNoTPM, err,
				"check 'ls -l /dev/tpm*' and that the TPM is enabled in the firmware; for a software TPM run swtpm and use --tpm swtpm:path=SOCKET",
				"no TPM at %s", strings.Join(paths, " or "))
		case errors.Is(err, os.ErrPermission):
			return nil, newErr(ErrPermission, err,
				"add your user to the tss group ('sudo usermod -aG tss $USER', then log in again)",
				"permission denied opening %s", p)
		case errors.Is(err, syscall.EBUSY):
			// The raw device admits one process at a time; wait for
			// the other one as a lock would.
			if f, err = waitDevice(p); err == nil {
				return f, nil
			}
			return nil, newErr(ErrBusy, err,
				"another program has held the TPM for a minute; use /dev/tpmrm0 (the kernel resource manager) if the kernel has it",
				"%s is busy", p)
		default:
			return nil, newErr(ErrNoTPM, err, "", "cannot open %s: %s", p, causeText(err))
		}
	}
	panic("unreachable")
}

func waitDevice(path string) (*os.File, error) {
	deadline := time.Now().Add(lockWait)
	delay := time.Millisecond
	for {
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return f, err
		}
	}
}

// causeText strips Go's operation prefixes from a system error so a
// message reads "connection refused", not "dial tcp 127.0.0.1:1: ...".
func causeText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

// lockPath is where processes sharing a swtpm (which has no resource
// manager and serves one connection at a time) serialize their use of it.
// Devices need none: /dev/tpmrm0 has the kernel's resource manager, and
// the kernel lets one process at a time open /dev/tpm0 (see openDevice).
func lockPath(spec Spec) string {
	switch spec.Kind {
	case SwtpmUnix:
		return spec.Path + ".lock"
	case SwtpmTCP:
		return filepath.Join(os.TempDir(), fmt.Sprintf("simple-tpm-pk11-swtpm-%s-%d.lock", spec.Host, spec.Port))
	}
	return ""
}

// lockWait bounds how long an operation waits for another process to
// finish with the TPM before giving up with ErrBusy.
const lockWait = 60 * time.Second

// acquireLock takes an exclusive flock on path. The kernel drops it when
// the process dies, so a crashed signer never blocks the others.
func acquireLock(path string) (*os.File, error) {
	f, err := openLockFile(path)
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// The socket's directory is not ours to write: lock in the temp dir.
		path = filepath.Join(os.TempDir(), "simple-tpm-pk11-"+strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "-"))
		f, err = openLockFile(path)
	}
	if err != nil {
		return nil, newErr(ErrBusy, err, "", "cannot open TPM lock file %s: %s", path, causeText(err))
	}
	deadline := time.Now().Add(lockWait)
	delay := 200 * time.Microsecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			cerr := f.Close()
			return nil, newErr(ErrBusy, errors.Join(err, cerr), "", "cannot lock %s: %s", path, causeText(err))
		}
		if time.Now().After(deadline) {
			cerr := f.Close()
			return nil, newErr(ErrBusy, cerr, "another process has been using the TPM for a minute; check for a stuck signer",
				"TPM busy: waited %v for %s", lockWait, path)
		}
		time.Sleep(delay)
		delay = min(delay*2, 5*time.Millisecond)
	}
}

// openLockFile opens an existing lock file read-only first: in a sticky
// directory such as /tmp, O_CREAT on another user's file is refused even
// though reading it (all flock needs) is allowed.
func openLockFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o666)
	}
	return f, err
}
