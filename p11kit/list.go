package p11kit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ListedModule is one module in "p11-kit list-modules" output.
type ListedModule struct {
	Name         string // the module file's name
	Path         string // the .so as configured (relative to p11-kit's module directory, or absolute); "" for a remote module
	URI          string // printed by p11-kit newer than 0.24 only
	Description  string // library-description
	Manufacturer string // library-manufacturer
	Version      string // library-version
	Tokens       []ListedToken
}

// ListedToken is a token of a ListedModule.
type ListedToken struct {
	Label           string
	URI             string // newer p11-kit only
	Manufacturer    string
	Model           string
	Serial          string
	HardwareVersion string
	FirmwareVersion string
	Flags           []string // e.g. "write-protected", "token-initialized", "login-required"
}

// ListModules runs "p11-kit list-modules" with env (nil: this process's
// environment) and returns its standard output.
//
// p11-kit 0.24 exits 1 and prints nothing at all, not even on stderr,
// when any module file in any module directory has a line that is not
// "key: value"; the error then says so.
func ListModules(ctx context.Context, env []string) (string, error) {
	tool, err := FindTool()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, tool, "list-modules")
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" && stdout.Len() == 0 {
			msg = "no output: a module file p11-kit cannot parse makes it load nothing; " +
				"run P11_KIT_DEBUG=conf p11-kit list-modules to see the files it read"
		}
		return stdout.String(), fmt.Errorf("p11kit: p11-kit list-modules: %w: %s", err, msg)
	}
	return stdout.String(), nil
}

// ParseListModules parses "p11-kit list-modules" output. The 0.24 format
// (checked on Debian 12):
//
//	NAME: PATH                    PATH is "(null)" for a remote module
//	    library-description: ...
//	    library-manufacturer: ...
//	    library-version: 0.24
//	    token: LABEL              "token: " with an empty label
//	        manufacturer: ...
//	        model: ...
//	        serial-number: ...
//	        hardware-version: 0.24
//	        firmware-version: 2.6  (only when not 0.0)
//	        flags:
//	               write-protected
//	               token-initialized
//
// Newer p11-kit prints "module: NAME" with "path:" and "uri:" lines
// below it; those are understood too. A module without tokens has no
// token lines.
func ParseListModules(out string) ([]ListedModule, error) {
	var mods []ListedModule
	var mod *ListedModule
	var tok *ListedToken
	tokIndent, flagsIndent := -1, -1
	for i, raw := range strings.Split(out, "\n") {
		line := strings.TrimRight(raw, " \t\r")
		text := strings.TrimLeft(line, " \t")
		if text == "" {
			continue
		}
		indent := len(line) - len(text)
		key, value, hasColon := strings.Cut(text, ":")
		value = strings.TrimSpace(value)
		bad := func() error {
			return fmt.Errorf("p11kit: list-modules line %d: unexpected %q", i+1, raw)
		}
		switch {
		case indent == 0:
			if !hasColon {
				return nil, bad()
			}
			if value == "(null)" {
				value = ""
			}
			mods = append(mods, ListedModule{Name: key, Path: value})
			mod, tok, tokIndent, flagsIndent = &mods[len(mods)-1], nil, -1, -1
		case mod == nil:
			return nil, bad()
		case tok != nil && flagsIndent >= 0 && indent > flagsIndent:
			tok.Flags = append(tok.Flags, text)
		case key == "token" && hasColon && (tok == nil || indent <= tokIndent):
			mod.Tokens = append(mod.Tokens, ListedToken{Label: value})
			tok, tokIndent, flagsIndent = &mod.Tokens[len(mod.Tokens)-1], indent, -1
		case !hasColon:
			return nil, bad()
		case tok != nil && indent > tokIndent:
			flagsIndent = -1
			switch key {
			case "flags":
				flagsIndent = indent
				if value != "" { // in case a version prints them on one line
					tok.Flags = append(tok.Flags, splitList(value)...)
				}
			case "uri":
				tok.URI = value
			case "manufacturer":
				tok.Manufacturer = value
			case "model":
				tok.Model = value
			case "serial-number":
				tok.Serial = value
			case "hardware-version":
				tok.HardwareVersion = value
			case "firmware-version":
				tok.FirmwareVersion = value
			}
		default:
			tok, tokIndent, flagsIndent = nil, -1, -1
			switch key {
			case "path":
				if mod.Name == "module" && mod.Path != "" && len(mod.Tokens) == 0 {
					// Newer format: "module: NAME" then "path: PATH".
					mod.Name = mod.Path
				}
				if value == "(null)" {
					value = ""
				}
				mod.Path = value
			case "uri":
				mod.URI = value
			case "library-description":
				mod.Description = value
			case "library-manufacturer":
				mod.Manufacturer = value
			case "library-version":
				mod.Version = value
			}
		}
	}
	return mods, nil
}
