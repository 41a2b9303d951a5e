package p11

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Logger writes the module's log: one line per event, to the config's
// log file, or to stderr. Never to stdout, which belongs to the program
// that loaded the module. PINs are never passed to it.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	f     *os.File // owned log file, closed by Close
	debug bool
	pid   int
}

// NewLogger logs to w (nil discards).
func NewLogger(w io.Writer, debug bool) *Logger {
	if w == nil {
		w = io.Discard
	}
	return &Logger{w: w, debug: debug, pid: os.Getpid()}
}

// openLog opens the log destination: the file when one is configured, else
// stderr. A log file that cannot be opened falls back to stderr with a
// line saying why.
func openLog(path string, toStderr, debug bool) *Logger {
	if path == "" || toStderr {
		return NewLogger(os.Stderr, debug)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		l := NewLogger(os.Stderr, debug)
		l.Errorf("cannot open log file %q: %v; logging to stderr", path, err)
		return l
	}
	l := NewLogger(f, debug)
	l.f = f
	return l
}

func (l *Logger) line(level, format string, args ...any) {
	if l == nil {
		return
	}
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	l.mu.Lock()
	defer l.mu.Unlock()
	// A failing log write has nowhere to be reported; the caller's
	// return value already carries the error.
	fmt.Fprintf(l.w, "%s simple-tpm-pk11[%d]: %s: %s\n", time.Now().Format("2006-01-02T15:04:05.000"), l.pid, level, msg)
}

// Errorf logs an error.
func (l *Logger) Errorf(format string, args ...any) { l.line("error", format, args...) }

// Warnf logs a warning.
func (l *Logger) Warnf(format string, args ...any) { l.line("warning", format, args...) }

// Debugf logs when debug is on.
func (l *Logger) Debugf(format string, args ...any) {
	if l != nil && l.debug {
		l.line("debug", format, args...)
	}
}

// Debug reports whether debug logging is on.
func (l *Logger) Debug() bool { return l != nil && l.debug }

// Close closes an owned log file.
func (l *Logger) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
