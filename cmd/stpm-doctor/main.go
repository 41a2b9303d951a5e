// Command stpm-doctor finds out why simple-tpm-pk11 does not work here, or
// that it does, and says what to do about each problem.
package main

import (
	"bufio"
	"os"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/doctor"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
)

var command = cli.Command{Synopsis: synopsis, Usage: usage}

const synopsis = "stpm-doctor [--tpm SPEC] [-c FILE] [--module PATH]"

const usage = `Usage:
    stpm-doctor [--tpm SPEC] [-c FILE] [--module PATH]

Checks, in this order, the TPM, the storage parent, the config file and its
keys, known weaknesses (ROCA, TPM-Fail), p11-kit, ssh and what stpm-bridge
needs, and says what to do about each fault. Prints one line per check,
"ok:", "warning:", "problem:" or "skipped:" (an earlier check failed),
followed by an indented "fix:" line where there is something to do. It
never signs and never asks for a PIN.

Options:
    --tpm SPEC          TPM to check: device:/dev/tpmrm0 (default),
                        swtpm:path=SOCKET or swtpm:host=H,port=P.
                        Also $SIMPLE_TPM_PK11_TPM or "tpm" in the config file.
    -c, --config FILE   The config file to check (default:
                        $SIMPLE_TPM_PK11_CONFIG, else
                        ~/.simple-tpm-pk11/config, as the module reads).
    --module PATH       libsimple-tpm-pk11.so (default: beside this program,
                        ../lib, or the system's; also $SIMPLE_TPM_PK11_MODULE).
    -h, --help          Show this help.
    --version           Show the version.

Exit status: 0 when no check found a problem (warnings alone keep 0), 1 when
one did, 2 for usage errors.

Example:
    $ stpm-doctor
    ok: TPM device:/dev/tpmrm0 (the default)
    ...
`

func main() { os.Exit(run(os.Args[1:], cli.New("stpm-doctor"))) }

func run(args []string, ui *cli.UI) int {
	var opts doctor.Options
	fs := cli.NewFlagSet("stpm-doctor")
	fs.StringVar(&opts.TPM, "tpm", "", "")
	fs.StringVar(&opts.Config, "c", "", "")
	fs.StringVar(&opts.Config, "config", "", "")
	fs.StringVar(&opts.Module, "module", "", "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	d := doctor.New(opts)
	w := bufio.NewWriter(os.Stdout)
	problems, err := d.Run(func(r doctor.Result) error {
		if _, err := w.WriteString(r.String()); err != nil {
			return err
		}
		// Each finding shows as soon as it is known: some checks wait
		// for the TPM or for p11-kit.
		return w.Flush()
	})
	if cerr := d.Close(); cerr != nil {
		ui.Warnf("%v", cerr)
	}
	if err != nil {
		return ui.Fail(err)
	}
	if problems {
		return cli.ExitError
	}
	return cli.ExitOK
}
