// Package p11kit is everything this project needs to know about p11-kit:
// finding its tools and modules, writing and removing module files
// (pkcs11.conf(5)), reading "p11-kit list-modules", and running
// "p11-kit server" to export a PKCS#11 module over a unix socket. It
// knows nothing about TPMs: to it, the module is just a PKCS#11 .so.
//
// Facts checked on Debian 12 with p11-kit 0.24.1 (the code relies on them):
//
//   - "p11-kit server" execs /usr/libexec/p11-kit/p11-kit-server (same
//     PID; argv[0] becomes "server"), so with -f the PID of the child we
//     start is the server's PID, and P11_KIT_SERVER_PID says the same.
//   - The server never loads the module itself. For every connection it
//     forks and the child immediately execs p11-kit-remote, which loads
//     the module and runs C_Initialize, C_GetInfo, C_GetSlotList,
//     C_GetSlotInfo, C_GetTokenInfo, C_OpenSession, C_CloseSession and
//     C_Finalize even for a client that connects and hangs up at once
//     (seen with pkcs11-spy). So the module never runs in a child forked
//     without exec, but every connection, including a liveness probe,
//     costs one full load and initialisation of the module.
//   - p11-kit-remote inherits the server's environment and stderr.
//   - Order at start: unlink(SOCKET), umask(066), bind, listen, then the
//     address lines on stdout; then stdout is pointed at /dev/null. The
//     socket is therefore mode 0711 whatever our umask: only its owner
//     (and root) may connect.
//   - The server unlinks whatever is at the -n path before binding: a
//     stale socket, a live socket of another server (which then keeps
//     running unreachable) and even a regular file. StartServer refuses
//     live sockets and non-sockets and removes only stale sockets.
//   - The address is percent-encoded: everything but A-Z a-z 0-9 - _ . /
//     becomes %XX ("a b" is "a%20b").
//   - The token URI is needed (no argument prints usage, exit 2). "" and
//     "foo" are accepted at start, but then every client's C_Initialize
//     fails with CKR_DEVICE_ERROR; a missing --provider file likewise
//     starts fine and fails per connection. StartServer checks both first.
//     "pkcs11:" exports every token; "pkcs11:token=Nope" gives zero slots.
//   - A socket directory that does not exist: stderr "(p11-kit:PID)
//     message: could not bind socket PATH: Unknown error 2", exit 1.
//   - SIGTERM or SIGINT: the server unlinks its socket and exits with
//     status 255. Connections in flight keep working (their
//     p11-kit-remote lives on, reparented, until the client disconnects);
//     new connections fail, and p11-kit-client.so then reports zero slots
//     without an error.
//   - stderr stays empty in normal operation (start, clients, SIGTERM).
package p11kit
