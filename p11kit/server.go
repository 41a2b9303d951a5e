package p11kit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts of StartServer and Stop.
const (
	startTimeout = 10 * time.Second
	stopGrace    = 5 * time.Second
	// maxSocketPath is sizeof(sun_path) minus the terminating NUL.
	maxSocketPath = 107
	stderrTailMax = 8 << 10
)

// ErrSocketInUse means something already accepts connections on the
// socket path given to StartServer. p11-kit server would silently unlink
// it and take the path over, leaving the other server unreachable.
var ErrSocketInUse = errors.New("p11kit: something already listens on the socket")

// ServerOptions configures StartServer.
type ServerOptions struct {
	Module string    // --provider: the PKCS#11 .so to export
	Socket string    // -n: absolute path of the socket; its directory must exist
	URI    string    // the tokens to export, a PKCS#11 URI such as "pkcs11:token=LABEL"; "" means "pkcs11:" (all)
	Env    []string  // the server's environment, inherited by the module's process; nil: this process's
	Stderr io.Writer // gets the server's stderr (and the module's), from another goroutine, until Stop returns; may be nil
}

// Server is a running "p11-kit server -f", a child of this process in a
// process group of its own (so a terminal's ^C reaches only its parent,
// which should call Stop). On Linux it gets SIGTERM if this process dies.
type Server struct {
	Address string // P11_KIT_SERVER_ADDRESS, e.g. "unix:path=/run/user/1000/x.sock"
	Socket  string // the socket's path
	PID     int    // the server's process id (also P11_KIT_SERVER_PID)

	cmd        *exec.Cmd
	done       chan struct{} // closed when the process has exited
	waitErr    error         // cmd.Wait's result, set before done is closed
	stderrDone chan struct{} // closed when the stderr pipe reached EOF
	pipeErr    error         // reading stdout or stderr failed (guarded by mu)

	mu       sync.Mutex
	stopping bool
	tail     []byte
	fwd      io.Writer // nil once muted or after a write error

	stopOnce sync.Once
	stopErr  error
}

// StartServer runs "p11-kit server -f -s -n SOCKET --provider MODULE URI"
// and returns once the server printed its address and listens on the
// socket, or fails within 10 s, killing the server and quoting the end of
// its stderr. ctx bounds the start only; afterwards the server runs until
// Stop (or until it dies: see Done).
//
// An existing socket file that nobody listens on (left by a server that
// was killed) is removed first; a live socket (ErrSocketInUse) or any
// other file at the path is refused, because p11-kit server would delete
// it.
//
// Every client connection runs the module in a new p11-kit-remote
// process, exec'd (not merely forked) by the server; the server process
// never loads the module.
func StartServer(ctx context.Context, o ServerOptions) (*Server, error) {
	if o.Module == "" {
		return nil, errors.New("p11kit: no PKCS#11 module to serve")
	}
	module, err := filepath.Abs(o.Module)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(module); err != nil {
		// p11-kit server would start anyway and fail every client.
		return nil, fmt.Errorf("p11kit: the PKCS#11 module: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("p11kit: module %s is not a file", module)
	}
	uri := o.URI
	if uri == "" {
		uri = "pkcs11:"
	}
	if !strings.HasPrefix(strings.ToLower(uri), "pkcs11:") {
		// p11-kit server accepts it, then every client gets CKR_DEVICE_ERROR.
		return nil, fmt.Errorf("p11kit: token filter %q is not a PKCS#11 URI (want pkcs11:...)", uri)
	}
	if err := prepareSocket(o.Socket); err != nil {
		return nil, err
	}
	tool, err := FindTool()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, errors.Join(err, outR.Close(), outW.Close())
	}
	cmd := exec.Command(tool, "server", "-f", "-s", "-n", o.Socket, "--provider", module, uri)
	cmd.Env = o.Env
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	// Our own pipes (not io.Writers) so that Wait does not wait for EOF:
	// p11-kit-remote children inherit stderr and outlive the server while
	// their clients stay connected.
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = sysProcAttr()
	s := &Server{
		Socket:     o.Socket,
		cmd:        cmd,
		done:       make(chan struct{}),
		stderrDone: make(chan struct{}),
		fwd:        o.Stderr,
	}
	// The parent-death signal (Linux) follows the thread that forks, not
	// the process: the goroutine that starts the server keeps its thread
	// until the server has exited, so no other goroutine can end that
	// thread (by exiting while locked to it) and the server with it.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	startErr := <-started
	if err := errors.Join(outW.Close(), errW.Close()); err != nil && startErr == nil {
		startErr = err
	}
	if startErr != nil {
		var kerr error
		if cmd.Process != nil { // started, but our ends of its pipes would not close
			kerr = s.kill()
		}
		return nil, errors.Join(fmt.Errorf("p11kit: starting %s server: %w", tool, startErr), kerr, outR.Close(), errR.Close())
	}
	go s.copyStderr(errR)
	helloc := make(chan helloLines, 1)
	go func() {
		h := readHello(outR)
		helloc <- h
		// Drain: the server points stdout at /dev/null after the lines.
		_, err := io.Copy(io.Discard, outR)
		s.notePipe(errors.Join(err, outR.Close()))
	}()
	var h helloLines
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	fail := func(format string, args ...any) (*Server, error) {
		kerr := s.kill()
		return nil, errors.Join(s.startError(fmt.Sprintf(format, args...)), kerr)
	}
	select {
	case h = <-helloc:
	case <-s.done:
		return nil, s.exitedAtStart()
	case <-timer.C:
		return fail("p11-kit server printed no address within %v", startTimeout)
	case <-ctx.Done():
		return fail("starting p11-kit server: %v", ctx.Err())
	}
	if h.err != nil {
		// The stdout pipe closed early: the process is exiting.
		select {
		case <-s.done:
			return nil, s.exitedAtStart()
		case <-time.After(time.Second):
			return fail("p11-kit server: %v", h.err)
		}
	}
	if h.pid != cmd.Process.Pid {
		return fail("p11-kit server reports pid %d, but the process started is %d: this p11-kit forks, and the server cannot be managed", h.pid, cmd.Process.Pid)
	}
	s.Address, s.PID = h.addr, h.pid
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !listening(o.Socket) {
		select {
		case <-tick.C:
		case <-s.done:
			return nil, s.exitedAtStart()
		case <-timer.C:
			return fail("p11-kit server does not listen on %s after %v", o.Socket, startTimeout)
		case <-ctx.Done():
			return fail("starting p11-kit server: %v", ctx.Err())
		}
	}
	return s, nil
}

type helloLines struct {
	addr string
	pid  int
	err  error
}

// prepareSocket checks the socket path and removes a stale socket file.
func prepareSocket(path string) error {
	switch {
	case path == "":
		return errors.New("p11kit: no socket path")
	case !filepath.IsAbs(path):
		return fmt.Errorf("p11kit: socket path %q is not absolute", path)
	case len(path) > maxSocketPath:
		return fmt.Errorf("p11kit: socket path %q is longer than %d bytes, the limit of unix sockets", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("p11kit: the socket's directory %s does not exist; create it first (mode 0700): %w", dir, fs.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("p11kit: the socket's directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("p11kit: %s (the socket's directory) is not a directory", dir)
	}
	fi, err = os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("p11kit: socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("p11kit: %s exists and is not a socket; p11-kit server would delete it: remove or move it yourself", path)
	}
	if SocketAlive(path) {
		return fmt.Errorf("%w %s (set P11_KIT_SERVER_ADDRESS=%s to use it, or stop it first)", ErrSocketInUse, path, UnixAddress(path))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("p11kit: removing the stale socket: %w", err)
	}
	return nil
}

// readHello reads the server's "NAME=value; export NAME;" lines (we pass
// -s, so never the csh form) until it has the address and the pid.
func readHello(r io.Reader) (h helloLines) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, value, ok := parseShLine(sc.Text())
		if !ok {
			continue
		}
		switch name {
		case "P11_KIT_SERVER_ADDRESS":
			h.addr = value
		case "P11_KIT_SERVER_PID":
			pid, err := strconv.Atoi(value)
			if err != nil || pid <= 0 {
				h.err = fmt.Errorf("bad P11_KIT_SERVER_PID %q", value)
				return h
			}
			h.pid = pid
		}
		if h.addr != "" && h.pid != 0 {
			return h
		}
	}
	if err := sc.Err(); err != nil {
		h.err = fmt.Errorf("reading its output: %w", err)
	} else {
		h.err = errors.New("its output ended before P11_KIT_SERVER_ADDRESS and P11_KIT_SERVER_PID")
	}
	return h
}

// parseShLine parses "NAME=value; export NAME;".
func parseShLine(line string) (name, value string, ok bool) {
	first, rest, ok := strings.Cut(strings.TrimSpace(line), ";")
	if !ok {
		return "", "", false
	}
	name, value, ok = strings.Cut(first, "=")
	if !ok || strings.TrimSpace(rest) != "export "+name+";" {
		return "", "", false
	}
	return name, value, true
}

func (s *Server) copyStderr(r *os.File) {
	defer close(s.stderrDone)
	defer func() { s.notePipe(r.Close()) }()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			s.mu.Lock()
			s.tail = append(s.tail, buf[:n]...)
			if len(s.tail) > stderrTailMax {
				s.tail = append([]byte(nil), s.tail[len(s.tail)-stderrTailMax:]...)
			}
			if s.fwd != nil {
				if _, werr := s.fwd.Write(buf[:n]); werr != nil {
					s.fwd = nil
				}
			}
			s.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// notePipe keeps a failure reading the server's output for Stop to
// report.
func (s *Server) notePipe(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.pipeErr = errors.Join(s.pipeErr, err)
	s.mu.Unlock()
}

// StderrTail returns the last few KiB the server (and the module in its
// p11-kit-remote children) wrote to stderr.
func (s *Server) StderrTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.tail)
}

// startError builds StartServer's error, with the server's stderr.
func (s *Server) startError(msg string) error {
	select {
	case <-s.stderrDone:
	case <-time.After(500 * time.Millisecond):
	}
	s.mute()
	var hint string
	if _, err := FindServer(); err != nil {
		hint = "; " + err.Error()
	}
	if t := strings.TrimSpace(s.StderrTail()); t != "" {
		return fmt.Errorf("p11kit: %s%s; its stderr:\n%s", msg, hint, t)
	}
	return fmt.Errorf("p11kit: %s%s (nothing on stderr)", msg, hint)
}

// exitedAtStart builds StartServer's error for a server that exited by
// itself, and removes a socket it may have left.
func (s *Server) exitedAtStart() error {
	err := s.startError("p11-kit server exited while starting (" + describeExit(s.waitErr) + ")")
	if rerr := removeStaleSocket(s.Socket); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

func (s *Server) mute() {
	s.mu.Lock()
	s.fwd = nil
	s.mu.Unlock()
}

// kill ends the server at once (start failures) and cleans up the socket.
func (s *Server) kill() error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	var errs []error
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		errs = append(errs, fmt.Errorf("killing p11-kit server: %w", err))
	}
	<-s.done
	if err := removeStaleSocket(s.Socket); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Stop ends the server: SIGTERM, up to 5 s for it to exit, then SIGKILL.
// It then removes the socket file if it is still there and nobody listens
// on it (after SIGKILL), and stops forwarding stderr. Clients connected at
// that moment keep their session (their p11-kit-remote process runs until
// they disconnect); new connections fail. Stop may be called more than
// once and after the server died; it returns the first call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	var errs []error
	select {
	case <-s.done:
	default:
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("p11kit: stopping p11-kit server: %w", err))
		}
		t := time.NewTimer(stopGrace)
		select {
		case <-s.done:
			t.Stop()
		case <-t.C:
			if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				errs = append(errs, fmt.Errorf("p11kit: killing p11-kit server: %w", err))
			}
			<-s.done
		}
	}
	// Let the last words through (orphaned p11-kit-remote processes may
	// hold the pipe open for much longer), then stop forwarding.
	select {
	case <-s.stderrDone:
	case <-time.After(100 * time.Millisecond):
	}
	s.mute()
	if err := removeStaleSocket(s.Socket); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	if s.pipeErr != nil {
		errs = append(errs, fmt.Errorf("p11kit: reading the server's output: %w", s.pipeErr))
		s.pipeErr = nil
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// removeStaleSocket removes path if it is a socket nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || SocketAlive(path) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("p11kit: removing the socket: %w", err)
	}
	return nil
}

// Wait waits for the server to exit. It returns nil after Stop or a
// clean exit, and otherwise an error with the exit status and the end
// of stderr. (p11-kit server exits with status 255 on SIGTERM and SIGINT.)
func (s *Server) Wait() error {
	<-s.done
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if stopping || s.waitErr == nil {
		return nil
	}
	msg := "p11-kit server exited (" + describeExit(s.waitErr) + ")"
	if t := strings.TrimSpace(s.StderrTail()); t != "" {
		msg += "; its stderr:\n" + t
	}
	return fmt.Errorf("p11kit: %s: %w", msg, s.waitErr)
}

// Done is closed when the server process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		if ee.ExitCode() == 255 {
			return "status 255, which p11-kit server uses when it gets SIGTERM or SIGINT"
		}
		return "status " + strconv.Itoa(ee.ExitCode())
	}
	if err == nil {
		return "status 0"
	}
	return err.Error()
}

// SocketAlive reports whether something accepts connections on the unix
// socket at path (false for no file, a stale socket or another file).
// It connects and hangs up at once: on a p11-kit server socket that
// starts a p11-kit-remote process which loads and initialises the module,
// so do not poll it in a loop against a live server.
func SocketAlive(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	return c.Close() == nil
}

// Listening reports whether a server listens on the socket at path,
// without connecting (see listening): safe to poll.
func Listening(path string) bool { return listening(path) }

// listening reports whether a socket file is at path and a listening
// unix socket is bound to that path, from /proc/net/unix, without
// connecting (a connection would make p11-kit server run the module).
// Without /proc it falls back to SocketAlive.
func listening(path string) bool {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		return false
	}
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return SocketAlive(path)
	}
	// "Num RefCount Protocol Flags Type St Inode Path"; flag 0x10000 is
	// __SO_ACCEPTCON (listening).
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.HasSuffix(line, " "+path) {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err == nil && flags&0x10000 != 0 {
			return true
		}
	}
	return false
}

// UnixAddress formats P11_KIT_SERVER_ADDRESS for a socket path as p11-kit
// server does: "unix:path=" and the path with every byte other than
// A-Z a-z 0-9 - _ . / percent-encoded.
func UnixAddress(path string) string {
	var b strings.Builder
	b.WriteString("unix:path=")
	for i := 0; i < len(path); i++ {
		c := path[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_./", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// ParseUnixAddress returns the socket path of a "unix:path=..." address.
func ParseUnixAddress(addr string) (string, error) {
	enc, ok := strings.CutPrefix(addr, "unix:path=")
	if !ok {
		return "", fmt.Errorf("p11kit: address %q does not start with unix:path=", addr)
	}
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		if enc[i] != '%' {
			b.WriteByte(enc[i])
			continue
		}
		if i+2 >= len(enc) {
			return "", fmt.Errorf("p11kit: address %q: truncated %%-escape", addr)
		}
		v, err := strconv.ParseUint(enc[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("p11kit: address %q: bad %%-escape", addr)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// EnvLines formats the lines p11-kit server prints for a shell to eval:
//
//	P11_KIT_SERVER_ADDRESS=ADDRESS; export P11_KIT_SERVER_ADDRESS;
//	P11_KIT_SERVER_PID=PID; export P11_KIT_SERVER_PID;
//
// or, for csh, "setenv P11_KIT_SERVER_ADDRESS ADDRESS;" and
// "setenv P11_KIT_SERVER_PID PID;" (byte for byte as p11-kit 0.24). The
// address is not quoted: one made by UnixAddress needs no quoting.
func EnvLines(address string, pid int, csh bool) string {
	if csh {
		return fmt.Sprintf("setenv P11_KIT_SERVER_ADDRESS %s;\nsetenv P11_KIT_SERVER_PID %d;\n", address, pid)
	}
	return fmt.Sprintf("P11_KIT_SERVER_ADDRESS=%s; export P11_KIT_SERVER_ADDRESS;\n"+
		"P11_KIT_SERVER_PID=%d; export P11_KIT_SERVER_PID;\n", address, pid)
}
