// Package tpm is the only code in simple-tpm-pk11 that speaks to a TPM 2.0.
//
// It names TPMs by spec strings, opens and serializes connections, creates,
// imports, loads and signs with keys, and turns TPM response codes into
// errors that tell a user what happened and what to do.
package tpm

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// EnvSpec names the environment variable that selects a TPM.
const EnvSpec = "SIMPLE_TPM_PK11_TPM"

// Default device paths: the kernel's resource manager first, the raw
// device when the kernel has no resource manager.
const (
	DeviceRM  = "/dev/tpmrm0"
	DeviceRaw = "/dev/tpm0"
)

// deviceRM and deviceRaw are the paths the default spec tries; tests point
// them into a temporary directory.
var deviceRM, deviceRaw = DeviceRM, DeviceRaw

// Kind says how a TPM is reached.
type Kind int

const (
	// Device is a character device (/dev/tpmrm0 or /dev/tpm0).
	Device Kind = iota
	// SwtpmUnix is swtpm's data channel on a unix socket.
	SwtpmUnix
	// SwtpmTCP is swtpm's data channel on a TCP port.
	SwtpmTCP
)

// Spec names one TPM. The syntax follows tpm2-tss's TCTI strings so users
// can reuse what they already type for tpm2-tools:
//
//	device:/dev/tpmrm0
//	swtpm:path=/run/swtpm/swtpm.sock
//	swtpm:host=127.0.0.1,port=2321
type Spec struct {
	Kind Kind
	Path string // device path or unix socket path
	Host string
	Port int
	// Fallback is true when the spec was not given by the user and the
	// raw device may be tried if the resource manager device is absent.
	Fallback bool
}

// DefaultSpec is used when no spec is given anywhere.
func DefaultSpec() Spec {
	return Spec{Kind: Device, Path: deviceRM, Fallback: true}
}

// ParseSpec parses a TPM spec string. An empty string gives DefaultSpec.
func ParseSpec(s string) (Spec, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "device" {
		return DefaultSpec(), nil
	}
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "device":
		if !strings.HasPrefix(rest, "/") {
			return Spec{}, specErr(s, "device path must be absolute (device:/dev/tpmrm0)")
		}
		return Spec{Kind: Device, Path: rest}, nil
	case "swtpm", "mssim":
		opts, err := parseOptions(rest)
		if err != nil {
			return Spec{}, specErr(s, "%v", err)
		}
		if p, ok := opts["path"]; ok {
			if len(opts) != 1 {
				return Spec{}, specErr(s, "path= cannot be combined with host= or port=")
			}
			if p == "" {
				return Spec{}, specErr(s, "empty socket path")
			}
			return Spec{Kind: SwtpmUnix, Path: p}, nil
		}
		sp := Spec{Kind: SwtpmTCP, Host: "127.0.0.1", Port: 2321}
		for k, v := range opts {
			switch k {
			case "host":
				sp.Host = v
			case "port":
				p, err := strconv.Atoi(v)
				if err != nil || p <= 0 || p > 65535 {
					return Spec{}, specErr(s, "port must be a number from 1 to 65535")
				}
				sp.Port = p
			default:
				return Spec{}, specErr(s, "unknown option %q (want path=, or host= and port=)", k)
			}
		}
		return sp, nil
	default:
		return Spec{}, specErr(s, "unknown kind %q (want device:PATH, swtpm:path=SOCKET or swtpm:host=H,port=P)", kind)
	}
}

// ErrBadSpec is wrapped by every spec parsing error.
var ErrBadSpec = errors.New("bad TPM spec")

func specErr(spec, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrBadSpec, spec, fmt.Sprintf(format, args...))
}

func parseOptions(s string) (map[string]string, error) {
	opts := map[string]string{}
	if s == "" {
		return opts, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("option %q is not key=value", kv)
		}
		if _, dup := opts[k]; dup {
			return nil, fmt.Errorf("option %q given twice", k)
		}
		opts[k] = v
	}
	return opts, nil
}

// String gives the spec back in its textual form.
func (s Spec) String() string {
	switch s.Kind {
	case SwtpmUnix:
		return "swtpm:path=" + s.Path
	case SwtpmTCP:
		return fmt.Sprintf("swtpm:host=%s,port=%d", s.Host, s.Port)
	default:
		return "device:" + s.Path
	}
}

// ResolveSpec picks the TPM: the command-line flag first, then the
// SIMPLE_TPM_PK11_TPM environment variable, then the config file's `tpm`
// directive, then the default device.
func ResolveSpec(flag, config string) (Spec, error) {
	for _, c := range []struct{ from, val string }{
		{"--tpm", flag},
		{EnvSpec, os.Getenv(EnvSpec)},
		{"config", config},
	} {
		if strings.TrimSpace(c.val) == "" {
			continue
		}
		sp, err := ParseSpec(c.val)
		if err != nil {
			return Spec{}, fmt.Errorf("%w (from %s)", err, c.from)
		}
		return sp, nil
	}
	return DefaultSpec(), nil
}
