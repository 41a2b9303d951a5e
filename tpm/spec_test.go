package tpm

import (
	"errors"
	"testing"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
		err  bool
	}{
		{"", DefaultSpec(), false},
		{"device:/dev/tpm0", Spec{Kind: Device, Path: "/dev/tpm0"}, false},
		{"swtpm:path=/run/s.sock", Spec{Kind: SwtpmUnix, Path: "/run/s.sock"}, false},
		{"swtpm:host=127.0.0.1,port=2321", Spec{Kind: SwtpmTCP, Host: "127.0.0.1", Port: 2321}, false},
		{"swtpm:port=4000", Spec{Kind: SwtpmTCP, Host: "127.0.0.1", Port: 4000}, false},
		{"swtpm:", Spec{Kind: SwtpmTCP, Host: "127.0.0.1", Port: 2321}, false},
		{"device:tpm0", Spec{}, true},
		{"swtpm:port=x", Spec{}, true},
		{"swtpm:port=70000", Spec{}, true},
		{"swtpm:path=/a,port=1", Spec{}, true},
		{"swtpm:bogus=1", Spec{}, true},
		{"swtpm:port", Spec{}, true},
		{"tabrmd:", Spec{}, true},
	} {
		got, err := ParseSpec(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("ParseSpec(%q) error = %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadSpec) {
				t.Errorf("ParseSpec(%q) error %v does not wrap ErrBadSpec", tc.in, err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if again, err := ParseSpec(got.String()); err != nil || again.Kind != got.Kind || again.Path != got.Path || again.Port != got.Port {
			t.Errorf("ParseSpec(%q).String() = %q does not round-trip", tc.in, got.String())
		}
	}
}

func TestResolveSpecOrder(t *testing.T) {
	t.Setenv(EnvSpec, "swtpm:port=1111")
	if s, _ := ResolveSpec("swtpm:port=2222", "swtpm:port=3333"); s.Port != 2222 {
		t.Errorf("flag must win, got %v", s)
	}
	if s, _ := ResolveSpec("", "swtpm:port=3333"); s.Port != 1111 {
		t.Errorf("env must beat config, got %v", s)
	}
	t.Setenv(EnvSpec, "")
	if s, _ := ResolveSpec("", "swtpm:port=3333"); s.Port != 3333 {
		t.Errorf("config used last, got %v", s)
	}
	if _, err := ResolveSpec("nope:", ""); !errors.Is(err, ErrBadSpec) {
		t.Errorf("bad flag: %v", err)
	}
}
