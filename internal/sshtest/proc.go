package sshtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a long-running child process whose output goes to a log file.
type proc struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once cmd has been waited for
	log  *os.File
	once sync.Once
	err  error
	// waitErr is how the process ended; set before done is closed.
	waitErr error
}

// startProc starts name with args and env (nil: inherit) in a new session
// with stdin from /dev/null and stdout/stderr appended to logPath. The kernel
// sends it SIGTERM if the thread that started it goes away, so it does not
// outlive a test binary killed by a timeout (Pdeathsig is per OS thread: do
// not call this from a goroutine locked with runtime.LockOSThread).
func startProc(logPath string, env []string, name string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, errors.Join(fmt.Errorf("start %s: %w", name, err), logf.Close())
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), log: logf}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after stopTimeout, and waits for the
// process. Calling it again returns the first result.
func (p *proc) stop() error {
	p.once.Do(func() {
		p.err = p.doStop()
		if err := p.log.Close(); err != nil && p.err == nil {
			p.err = err
		}
	})
	return p.err
}

func (p *proc) doStop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM %s pid %d: %w", p.cmd.Path, p.pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL %s pid %d: %w", p.cmd.Path, p.pid, err)
	}
	<-p.done
	return fmt.Errorf("%s pid %d ignored SIGTERM for %v; killed", p.cmd.Path, p.pid, stopTimeout)
}

// waitTCP waits until addr accepts a TCP connection.
func (p *proc) waitTCP(addr string, timeout time.Duration) error {
	return p.waitDial("tcp", addr, timeout)
}

// waitDial waits until addr accepts a connection, failing early if the
// process exits.
func (p *proc) waitDial(network, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s (pid %d) exited before serving %s: %v", p.cmd.Path, p.pid, addr, p.waitErr)
		default:
		}
		c, err := net.DialTimeout(network, addr, 500*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) not serving %s after %v: %v", p.cmd.Path, p.pid, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie. A process that is
// not our child (ssh -f after its fork) is reparented, and a PID 1 that does
// not reap leaves it as a zombie, which kill(pid, 0) still reports.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	st, _, ok := parseStat(string(b))
	return !ok || st != "Z"
}

// waitGone waits up to timeout for pid to be gone.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// parseStat returns the state and parent PID from a /proc/PID/stat line
// ("PID (comm) S PPID ..."; comm may contain spaces and parentheses).
func parseStat(line string) (state string, ppid int, ok bool) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return "", 0, false
	}
	return f[0], ppid, true
}

// descendants lists the PIDs of all descendants of root (children first
// discovered, breadth first), from /proc.
func descendants(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if _, ppid, ok := parseStat(string(b)); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}
