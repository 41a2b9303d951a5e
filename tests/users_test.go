package tests

import (
	"os"
	"os/exec"
	"os/user"
	"sync"
	"testing"
)

// testUserName is the unprivileged account the p11-kit and bridge tests
// use: p11-kit reads a user's module directory only for users other than
// root, and a "remote" login should not be root either.
const testUserName = "stpm-test"

var userOnce struct {
	sync.Once
	u   *user.User
	err error
}

// testUser returns the unprivileged test account, creating it (system
// account, home in /home, /bin/sh, no password) when the tests run as
// root and it does not exist yet.
func testUser(t testing.TB) *user.User {
	t.Helper()
	userOnce.Do(func() {
		if u, err := user.Lookup(testUserName); err == nil {
			userOnce.u = u
			return
		}
		if os.Geteuid() != 0 {
			userOnce.err = errNoUser
			return
		}
		for _, args := range [][]string{
			{"useradd", "--system", "--create-home", "--home-dir", "/home/" + testUserName, "--shell", "/bin/sh", testUserName},
			// "*": no password can log in, but the account is not locked,
			// so sshd accepts keys for it.
			{"usermod", "-p", "*", testUserName},
		} {
			if out, err := command(t, args[0], args[1:]...).CombinedOutput(); err != nil {
				userOnce.err = &cmdError{args: args, err: err, out: string(out)}
				return
			}
		}
		userOnce.u, userOnce.err = user.Lookup(testUserName)
	})
	if userOnce.err == errNoUser {
		if os.Getenv("CI") != "" {
			t.Fatalf("user %s is missing and the tests do not run as root to create it", testUserName)
		}
		t.Skipf("user %s is missing; run the tests as root once to create it", testUserName)
	}
	if userOnce.err != nil {
		t.Fatal(userOnce.err)
	}
	return userOnce.u
}

type cmdError struct {
	args []string
	err  error
	out  string
}

func (e *cmdError) Error() string { return e.args[0] + ": " + e.err.Error() + ": " + e.out }

var errNoUser = &cmdError{args: []string{"user lookup"}, err: os.ErrNotExist}

// chownTree gives a directory tree to u.
func chownTree(t testing.TB, u *user.User, dir string) {
	t.Helper()
	if out, err := command(t, "chown", "-R", u.Uid+":"+u.Gid, dir).CombinedOutput(); err != nil {
		t.Fatalf("chown %s: %v: %s", dir, err, out)
	}
}

// asUser runs a command as u with exactly env (plus HOME and USER of u).
func asUser(t testing.TB, u *user.User, env []string, name string, args ...string) *exec.Cmd {
	full := append([]string{"-u", u.Username, "--", "env", "-i", "HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username}, env...)
	full = append(full, name)
	return command(t, "runuser", append(full, args...)...)
}
