package tpm

import (
	"errors"
	"fmt"
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
	var waited time.Duration
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
			return nil, stayedBusy(rc, attempt+1, waited)
		}
		r.sleep(delay)
		waited += delay
		delay = min(delay*2, maxRetryWait)
	}
}

// stayedBusy is the error after the last retry: the TPM answered rc to
// each of tries sends, with waited in between.
func stayedBusy(rc tpm2.TPMRC, tries int, waited time.Duration) error {
	name := "TPM_RC_RETRY"
	switch rc {
	case tpm2.TPMRCYielded:
		name = "TPM_RC_YIELDED"
	case tpm2.TPMRCTesting:
		name = "TPM_RC_TESTING"
	}
	return newErr(ErrBusy, rc, "try again; if it lasts, restart the TPM daemon or swtpm",
		"the TPM stayed busy: %s for %d tries over about %.1f s", name, tries, waited.Seconds())
}

// dial opens the transport a spec names, with errors that say what to do.
func dial(spec Spec) (transport.TPMCloser, error) {
	switch spec.Kind {
	case SwtpmUnix, SwtpmTCP:
		t, err := dialSocket(spec)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, newErr(ErrPermission, err, "check the socket's owner and mode",
					"permission denied connecting to swtpm at %s", spec)
			}
			return nil, newErr(ErrUnreachable, err,
				"start swtpm, or point --tpm / "+EnvSpec+" at the right socket",
				"swtpm not reachable at %s: %s", spec, causeText(err))
		}
		return t, nil
	default:
		fd, err := openDevice(spec)
		if err != nil {
			return nil, err
		}
		return &fdTPM{fd: fd}, nil
	}
}

// dialTimeout bounds connecting to swtpm, including the wait for it to
// take us from its listen queue.
const dialTimeout = 10 * time.Second

// openRW opens a TPM device for reading and writing, without Go's poller
// (see fdTPM).
func openRW(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
		if !errors.Is(err, syscall.EINTR) {
			return fd, err
		}
	}
}

func openDevice(spec Spec) (int, error) {
	paths := []string{spec.Path}
	if spec.Fallback && spec.Path == deviceRM {
		paths = append(paths, deviceRaw)
	}
	for i, p := range paths {
		fd, err := openRW(p)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, os.ErrNotExist) && i+1 < len(paths):
			continue
		case errors.Is(err, os.ErrNotExist):
			return -1, newErr(ErrNoTPM, err,
				"check 'ls -l /dev/tpm*' and that the TPM is enabled in the firmware; for a software TPM run swtpm and use --tpm swtpm:path=SOCKET",
				"no TPM at %s", strings.Join(paths, " or "))
		case errors.Is(err, os.ErrPermission):
			return -1, newErr(ErrPermission, err,
				"add your user to the tss group ('sudo usermod -aG tss $USER', then log in again)",
				"permission denied opening %s", p)
		case errors.Is(err, syscall.EBUSY):
			// The raw device admits one process at a time; wait for
			// the other one as a lock would.
			if fd, err = waitDevice(p); err == nil {
				return fd, nil
			}
			return -1, newErr(ErrBusy, err,
				"another program has held the TPM for a minute; use /dev/tpmrm0 (the kernel resource manager) if the kernel has it",
				"%s is busy", p)
		default:
			return -1, newErr(ErrNoTPM, err, "", "cannot open %s: %s", p, causeText(err))
		}
	}
	panic("unreachable")
}

func waitDevice(path string) (int, error) {
	deadline := time.Now().Add(lockWait)
	delay := time.Millisecond
	for {
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
		fd, err := openRW(path)
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fd, err
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
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
		return nil, newErr(ErrBusy, errors.Join(err, f.Close()), "", "cannot lock %s: %s", path, causeText(err))
	}
	return waitLock(f, path, lockWait)
}

// waitLock waits for the lock on f in the kernel, which hands it to a
// waiter when it is released: a process that signs in a loop cannot take
// it again before the others get their turn, as it could if they polled.
// A blocking flock cannot be cancelled, so it runs on a goroutine that,
// if the wait times out, releases the lock as soon as it gets it.
func waitLock(f *os.File, path string, timeout time.Duration) (*os.File, error) {
	got := make(chan error) // unbuffered: taken only while waitLock waits
	gaveUp := make(chan struct{})
	go func() {
		var err error
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		select {
		case got <- err:
		case <-gaveUp:
			// Nobody wants the lock any more: closing the descriptor
			// drops it. The file is open read-only, so a failed close
			// loses nothing, and no caller is left to tell.
			f.Close()
		}
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			return nil, newErr(ErrBusy, errors.Join(err, f.Close()), "", "cannot lock %s: %s", path, causeText(err))
		}
		return f, nil
	case <-timer.C:
		close(gaveUp)
		return nil, newErr(ErrBusy, nil, "another process has been using the TPM for a minute; check for a stuck signer",
			"TPM busy: waited %v for %s", timeout, path)
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
