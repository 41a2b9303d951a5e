// Package p11 is the PKCS#11 token of simple-tpm-pk11 in plain Go: slots,
// the token, sessions, objects, search, login and signing. The c-shared
// layer in module/ only converts C arguments and calls it, so everything
// here is tested without cgo.
//
// One slot holds one token with every configured key. Loading and
// C_Initialize read the config and key files but never talk to the TPM:
// that starts when the token's details are asked for or a key signs.
package p11

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// SlotID is the one slot this module has.
const SlotID uint = 1

// Environment variables read at C_Initialize.
const (
	EnvDebug     = "SIMPLE_TPM_PK11_DEBUG"
	EnvLogStderr = "SIMPLE_TPM_PK11_LOG_STDERR"
)

// DefaultLabel is the token label when the config sets none.
const DefaultLabel = "simple-tpm-pk11"

// InitArgs is what C_Initialize was given.
type InitArgs struct {
	Flags uint
	// Mutexes is how many of the four mutex callbacks were set.
	Mutexes int
	// Reserved is true when pReserved was not NULL.
	Reserved bool
}

// Module is the state of one loaded module.
type Module struct {
	// log is read without mu: a call that panics may have held mu, and
	// the panic is still logged (see Panicked).
	log atomic.Pointer[Logger]

	mu          sync.Mutex
	initialized bool

	label   string
	keys    []*Key
	objects []*object
	tpm     *tpm.TPM
	keyPIN  []byte // from the config: keys with a PIN need no login
	srkPIN  []byte

	sessions map[uint]*Session
	nextSess uint
	loggedIn bool
	userPIN  []byte

	// mechs is the mechanism list, worked out once per C_Initialize from
	// what the TPM supports.
	mechs map[uint]MechanismInfo

	// cfgPath is the config file C_Initialize read, or tried to read.
	cfgPath string
	// noKeysLogged is true once why the token has no keys is in the log
	// at error level: at C_Initialize (an unreadable config, keys left
	// out) or at the first call that answered CKR_TOKEN_NOT_PRESENT.
	noKeysLogged bool

	// Hooks for tests.
	LoadConfig func() (*config.Config, error)
	OpenTPM    func(tpm.Spec) *tpm.TPM
	Getenv     func(string) string
}

// New returns an uninitialized module.
func New() *Module {
	m := &Module{LoadConfig: config.LoadDefault, OpenTPM: tpm.Open, Getenv: os.Getenv}
	m.log.Store(NewLogger(os.Stderr, false))
	return m
}

// Log returns the module's logger: stderr until C_Initialize opens the
// configured one. It takes no lock.
func (m *Module) Log() *Logger { return m.log.Load() }

// Initialize is C_Initialize. It reads the config and key files once;
// a broken config never fails it: bad keys are left out and each problem
// is logged with its file and line.
func (m *Module) Initialize(args InitArgs) error {
	if args.Reserved {
		return rvErr(CKR_ARGUMENTS_BAD, "pReserved must be NULL")
	}
	if args.Mutexes != 0 && args.Mutexes != 4 {
		return rvErr(CKR_ARGUMENTS_BAD, "give all four mutex callbacks or none")
	}
	// CKF_LIBRARY_CANT_CREATE_OS_THREADS is accepted. The Go runtime's
	// threads already run when the module is loaded, before any
	// C_Initialize, and the module starts no thread on its own that would
	// outlive a call; refusing the flag (CKR_NEED_TO_CREATE_THREADS) would
	// only lock out GnuTLS 3.7 (p11tool, Debian 12), which always sets it
	// and gives up on that answer instead of trying again without it.
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized {
		return rvErr(CKR_CRYPTOKI_ALREADY_INITIALIZED, "C_Initialize called twice")
	}
	// Locking: Go's own mutexes are OS-level locks, safe from any thread,
	// so the module locks internally in all four cases of PKCS#11 2.40,
	// 5.4: with or without CKF_OS_LOCKING_OK, with or without the
	// application's mutex callbacks. The callbacks are not needed for
	// safety and are not called.
	cfg, cfgErr := m.LoadConfig()
	debug := m.Getenv(EnvDebug) != "" || (cfg != nil && cfg.Debug)
	logFile := ""
	if cfg != nil {
		logFile = cfg.Log
	}
	log := openLog(logFile, m.Getenv(EnvLogStderr) != "", debug)
	m.log.Store(log)
	m.cfgPath = configPath(cfg, cfgErr)
	m.noKeysLogged = false
	if cfgErr != nil {
		log.Errorf("config: %v; the token has no keys (fix the file or %s)", cfgErr, config.EnvConfig)
		m.noKeysLogged = true
		cfg = &config.Config{}
	}
	defer cfg.Zero()
	logProblems(log, cfg)
	if w, ok := cfg.InsecurePINs(); ok {
		log.Warnf("%s", w)
	}
	m.label = cfg.Label
	if m.label == "" {
		m.label = DefaultLabel
	}
	spec, err := tpm.ResolveSpec("", cfg.TPM)
	if err != nil {
		log.Errorf("%v; using %s", err, tpm.DefaultSpec())
		spec = tpm.DefaultSpec()
	}
	m.tpm = m.OpenTPM(spec)
	if cfg.HasKeyPIN {
		m.keyPIN = bytes.Clone(cfg.KeyPIN)
	}
	if cfg.HasSRKPIN {
		m.srkPIN = bytes.Clone(cfg.SRKPIN)
	}
	m.keys, m.objects = nil, nil
	for _, ck := range cfg.Keys {
		k, err := loadKey(ck.Path, ck.Label)
		if err != nil {
			switch {
			case ck.Line == 0 && errors.Is(err, fs.ErrNotExist):
				// No config file and no default key: the module is
				// installed but not set up; stay quiet for every
				// program p11-kit loads it into.
				log.Debugf("no key at %q (make one with stpm-keygen)", ck.Path)
			case ck.Line == 0:
				log.Errorf("default key: %s", keyFileMessage(err))
				m.noKeysLogged = true
			default:
				log.Errorf("config %s:%d: key left out: %s", cfg.File, ck.Line, keyFileMessage(err))
				m.noKeysLogged = true
			}
			continue
		}
		k.NeedsLogin = k.NeedsPIN && !cfg.HasKeyPIN
		m.addKey(k)
	}
	m.sessions = map[uint]*Session{}
	m.loggedIn = false
	m.mechs = nil
	m.initialized = true
	log.Debugf("initialized: %d keys, TPM %s", len(m.keys), spec)
	return nil
}

// keyFileMessage gives the log text for a key file that did not load,
// with what to do about it: the key file package's hint for a file that
// is not a key file, else the TPM package's.
func keyFileMessage(err error) string {
	hint := tpm.Hint(err)
	var ke *keyfile.Error
	switch {
	case errors.As(err, &ke) && ke.Hint() != "":
		hint = ke.Hint()
	case errors.Is(err, fs.ErrNotExist):
		hint = "make the key with stpm-keygen, or correct the key line"
	}
	if hint == "" {
		return err.Error()
	}
	return err.Error() + " (hint: " + hint + ")"
}

// maxProblemLines is how many of a config's problems C_Initialize logs
// one by one. A file that is not a config at all (a key, a binary named
// by SIMPLE_TPM_PK11_CONFIG by mistake) has a problem on nearly every
// line, and p11-kit loads the module into every program that uses it:
// each of them would print hundreds of lines on its stderr.
const maxProblemLines = 5

// logProblems logs the first maxProblemLines problems of cfg and, when
// there are more, one line that counts the rest.
func logProblems(log *Logger, cfg *config.Config) {
	for i, p := range cfg.Problems {
		if i == maxProblemLines {
			more := len(cfg.Problems) - maxProblemLines
			name := cfg.File
			if name == "" {
				name = "file"
			}
			log.Errorf("config %s: %d more %s; it does not look like a simple-tpm-pk11 config (see simple-tpm-pk11-config(5))",
				name, more, plural(more, "problem", "problems"))
			return
		}
		log.Errorf("config %s", p)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// configPath names the config file for messages: the one read, the one
// that could not be read, or where it would be.
func configPath(cfg *config.Config, err error) string {
	if cfg != nil && cfg.File != "" {
		return cfg.File
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path
	}
	if p, err := config.Path(); err == nil {
		return p
	}
	return "$" + config.EnvConfig
}

// noToken is the answer of the calls that need the token while no key
// loaded. Its cause is logged once per C_Initialize at error level;
// later answers are marked Logged (debug level). Callers hold m.mu.
func (m *Module) noToken() error {
	e := rvErr(CKR_TOKEN_NOT_PRESENT, "the token has no usable key: make one with stpm-keygen and name it in %s", m.cfgPath)
	e.Logged = m.noKeysLogged
	m.noKeysLogged = true
	return e
}

// addKey gives a key its objects; handles are stable for the life of
// the C_Initialize: 3i+1 private key, 3i+2 public key, 3i+3 certificate.
func (m *Module) addKey(k *Key) {
	i := uint(len(m.keys))
	m.keys = append(m.keys, k)
	m.objects = append(m.objects,
		&object{handle: 3*i + 1, class: CKO_PRIVATE_KEY, key: k},
		&object{handle: 3*i + 2, class: CKO_PUBLIC_KEY, key: k})
	if k.Cert != nil {
		m.objects = append(m.objects, &object{handle: 3*i + 3, class: CKO_CERTIFICATE, key: k})
	}
}

// Finalize is C_Finalize: sessions end, PINs are wiped.
func (m *Module) Finalize() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.initialized {
		return rvErr(CKR_CRYPTOKI_NOT_INITIALIZED, "C_Finalize before C_Initialize")
	}
	m.initialized = false
	m.Log().Debugf("finalize: %d goroutines", runtime.NumGoroutine())
	for _, s := range m.sessions {
		s.close()
	}
	m.sessions = nil
	zero(m.userPIN)
	zero(m.keyPIN)
	zero(m.srkPIN)
	m.userPIN, m.keyPIN, m.srkPIN = nil, nil, nil
	m.loggedIn = false
	m.mechs = nil
	var tpmErr error
	if m.tpm != nil {
		// Unloads what a kept connection (/dev/tpmrm0) holds.
		tpmErr = m.tpm.Close()
		m.tpm = nil
	}
	logErr := m.log.Swap(NewLogger(os.Stderr, false)).Close()
	switch {
	case logErr != nil:
		return rvErr(CKR_GENERAL_ERROR, "closing the log file: %v", logErr)
	case tpmErr != nil:
		return &Error{RV: CKR_DEVICE_ERROR, Msg: "releasing the TPM: " + tpmErr.Error(), Err: tpmErr}
	}
	return nil
}

func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// check returns an error unless the module is initialized; callers hold m.mu.
func (m *Module) check() error {
	if !m.initialized {
		return rvErr(CKR_CRYPTOKI_NOT_INITIALIZED, "call C_Initialize first")
	}
	return nil
}

func (m *Module) checkSlot(slot uint) error {
	if err := m.check(); err != nil {
		return err
	}
	if slot != SlotID {
		return rvErr(CKR_SLOT_ID_INVALID, "no slot %d (this module has slot %d)", slot, SlotID)
	}
	return nil
}

// Info is CK_INFO.
type Info struct {
	Manufacturer, Description string
	Version                   [2]byte
}

// GetInfo is C_GetInfo.
func (m *Module) GetInfo() (Info, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return Info{}, err
	}
	return Info{Manufacturer: "simple-tpm-pk11", Description: "TPM 2.0 keys for ssh", Version: [2]byte{2, 0}}, nil
}

// SlotList is C_GetSlotList.
func (m *Module) SlotList(tokenPresent bool) ([]uint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	if tokenPresent && len(m.keys) == 0 {
		return []uint{}, nil
	}
	return []uint{SlotID}, nil
}

// SlotInfo is CK_SLOT_INFO.
type SlotInfo struct {
	Description, Manufacturer string
	Flags                     uint
}

// GetSlotInfo is C_GetSlotInfo. The token is present when at least one
// key loaded.
func (m *Module) GetSlotInfo(slot uint) (SlotInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkSlot(slot); err != nil {
		return SlotInfo{}, err
	}
	si := SlotInfo{Description: "TPM 2.0 at " + m.tpm.Spec().String(), Manufacturer: "simple-tpm-pk11", Flags: CKF_HW_SLOT}
	if len(m.keys) > 0 {
		si.Flags |= CKF_TOKEN_PRESENT
	}
	return si, nil
}

// TokenInfo is CK_TOKEN_INFO.
type TokenInfo struct {
	Label, Manufacturer, Model, Serial string
	Flags                              uint
	Sessions, RWSessions               uint
	MinPIN, MaxPIN                     uint
	Firmware                           [2]byte
}

// Pad gives s as a fixed-size character field of n bytes, as CK_INFO,
// CK_SLOT_INFO and CK_TOKEN_INFO hold them: padded with spaces and never
// NUL-terminated (PKCS#11 2.40, 3.1-3.2). A longer s is cut at a UTF-8
// character boundary; control characters, NUL among them, and bytes that
// are not UTF-8 become spaces, so the field has no NUL for a C caller to
// stop at.
func Pad(s string, n int) []byte {
	out := bytes.Repeat([]byte{' '}, n)
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if i+w > n {
			break
		}
		if r != utf8.RuneError && !unicode.IsControl(r) {
			copy(out[i:], s[i:i+w])
		}
		i += w
	}
	return out
}

// maxPIN is the longest auth value a TPM takes for a SHA-256 named key
// (TPM2B_AUTH is at most the name algorithm's digest size).
const maxPIN = 32

// GetTokenInfo is C_GetTokenInfo. Its first call asks the TPM who it is
// (cached); later calls only read the lockout counters when a key has a
// PIN, so the flags follow the TPM.
//
// The serial number is a hash of the name of a storage parent, which
// stays the same for as long as the TPM keeps its owner seed. The parent
// is the one with the lowest handle among the configured keys (the owner
// hierarchy's storage primary whenever a key uses it, as stpm-keygen's
// keys do), so the order of the keys in the config does not change it.
func (m *Module) GetTokenInfo(slot uint) (TokenInfo, error) {
	snap, err := m.tokenSnapshot(slot)
	if err != nil {
		return TokenInfo{}, err
	}
	ti, parent, t, srk := snap.ti, snap.parent, snap.tpm, snap.srk
	defer zero(srk)

	id, err := t.Identity(parent, srk)
	if err != nil {
		return TokenInfo{}, err
	}
	ti.Manufacturer = id.Manufacturer
	ti.Firmware = [2]byte{byte(id.Firmware >> 48), byte(id.Firmware >> 32)}
	sum := sha256.Sum256(id.ParentName)
	ti.Serial = hex.EncodeToString(sum[:8])
	if snap.needPIN {
		l, err := t.LockoutState()
		if err != nil {
			return TokenInfo{}, err
		}
		switch r := l.Remaining(); {
		case r == 0:
			ti.Flags |= CKF_USER_PIN_LOCKED
		case r == 1:
			ti.Flags |= CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_COUNT_LOW
		case l.Counter > 0:
			ti.Flags |= CKF_USER_PIN_COUNT_LOW
		}
	}
	return ti, nil
}

// tokenSnapshot is what C_GetTokenInfo reads under the module lock
// before it asks the TPM.
type tokenSnapshot struct {
	ti      TokenInfo
	needPIN bool
	parent  uint32
	tpm     *tpm.TPM
	srk     []byte
}

func (m *Module) tokenSnapshot(slot uint) (tokenSnapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkSlot(slot); err != nil {
		return tokenSnapshot{}, err
	}
	if len(m.keys) == 0 {
		return tokenSnapshot{}, m.noToken()
	}
	panicPoint("C_GetTokenInfo")
	snap := tokenSnapshot{tpm: m.tpm, srk: bytes.Clone(m.srkPIN)}
	snap.ti = TokenInfo{Label: m.label, Model: "TPM 2.0", MinPIN: 1, MaxPIN: maxPIN,
		Flags: CKF_TOKEN_INITIALIZED | CKF_RNG}
	for _, s := range m.sessions {
		snap.ti.Sessions++
		if s.rw {
			snap.ti.RWSessions++
		}
	}
	parents := make([]uint32, 0, len(m.keys))
	for _, k := range m.keys {
		parents = append(parents, k.File.Parent)
		if k.NeedsPIN {
			snap.needPIN = true
			snap.ti.Flags |= CKF_USER_PIN_INITIALIZED
		}
		if k.NeedsLogin {
			snap.ti.Flags |= CKF_LOGIN_REQUIRED
		}
	}
	snap.parent = slices.Min(parents)
	return snap, nil
}
