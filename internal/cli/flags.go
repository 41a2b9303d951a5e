package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// Command describes a command's help texts.
type Command struct {
	Synopsis string // one line, also printed after usage errors
	Usage    string // the whole --help text
}

// NewFlagSet returns a flag set that prints nothing by itself: help and
// errors go through Parse.
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// Parse parses args and deals with --help, --version, bad flags and stray
// arguments. When done is true the command should exit with code.
func (u *UI) Parse(fs *flag.FlagSet, cmd Command, args []string) (code int, done bool) {
	version := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stdout, cmd.Usage)
			return ExitOK, true
		}
		return u.Usage(cmd.Synopsis, "%v", err), true
	}
	if *version {
		fmt.Fprintf(os.Stdout, "%s %s\n", u.Prog, Version)
		return ExitOK, true
	}
	if fs.NArg() > 0 {
		return u.Usage(cmd.Synopsis, "unexpected argument %q", fs.Arg(0)), true
	}
	return 0, false
}
