package p11

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"sync"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// Session is one PKCS#11 session.
type Session struct {
	handle uint
	rw     bool

	// find and finding are guarded by the module's mu.
	find    []uint // handles left to return
	finding bool   // a search is active

	// mu guards closed and ops. PKCS#11 lets only one thread use a
	// session at a time, but a misbehaving caller, or C_CloseAllSessions
	// from another thread, must not corrupt it. Lock order: the module's
	// mu before mu; mu is never held across TPM I/O.
	mu     sync.Mutex
	closed bool
	ops    [2]*signOp // the active sign and verify operations, by opKind
}

// close marks the session closed and drops its operations, so a call
// that found it before it was removed answers CKR_SESSION_CLOSED.
func (s *Session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.ops = [2]*signOp{}
}

// OpenSession is C_OpenSession.
func (m *Module) OpenSession(slot, flags uint) (uint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkSlot(slot); err != nil {
		return 0, err
	}
	if flags&CKF_SERIAL_SESSION == 0 {
		return 0, rvErr(CKR_SESSION_PARALLEL_NOT_SUPPORTED, "C_OpenSession without CKF_SERIAL_SESSION")
	}
	if len(m.keys) == 0 {
		return 0, m.noToken()
	}
	m.nextSess++
	h := m.nextSess
	m.sessions[h] = &Session{handle: h, rw: flags&CKF_RW_SESSION != 0}
	return h, nil
}

// session finds an open session; callers hold m.mu.
func (m *Module) session(h uint) (*Session, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	s, ok := m.sessions[h]
	if !ok {
		return nil, rvErr(CKR_SESSION_HANDLE_INVALID, "no open session %d", h)
	}
	return s, nil
}

// CloseSession is C_CloseSession.
func (m *Module) CloseSession(h uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return err
	}
	s.close()
	delete(m.sessions, h)
	m.logoutIfIdle()
	return nil
}

// CloseAllSessions is C_CloseAllSessions.
func (m *Module) CloseAllSessions(slot uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkSlot(slot); err != nil {
		return err
	}
	for h, s := range m.sessions {
		s.close()
		delete(m.sessions, h)
	}
	m.logoutIfIdle()
	return nil
}

// logoutIfIdle ends the login when the last session closes (PKCS#11
// 2.40, 5.6: the login state belongs to the application's sessions).
func (m *Module) logoutIfIdle() {
	if len(m.sessions) == 0 && m.loggedIn {
		m.loggedIn = false
		zero(m.userPIN)
		m.userPIN = nil
	}
}

// SessionInfo is CK_SESSION_INFO.
type SessionInfo struct {
	Slot, State, Flags, DeviceError uint
}

// GetSessionInfo is C_GetSessionInfo.
func (m *Module) GetSessionInfo(h uint) (SessionInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return SessionInfo{}, err
	}
	si := SessionInfo{Slot: SlotID, Flags: CKF_SERIAL_SESSION}
	switch {
	case s.rw && m.loggedIn:
		si.State, si.Flags = CKS_RW_USER_FUNCTIONS, si.Flags|CKF_RW_SESSION
	case s.rw:
		si.State, si.Flags = CKS_RW_PUBLIC_SESSION, si.Flags|CKF_RW_SESSION
	case m.loggedIn:
		si.State = CKS_RO_USER_FUNCTIONS
	default:
		si.State = CKS_RO_PUBLIC_SESSION
	}
	return si, nil
}

// Login is C_Login. The PIN is checked with the TPM right away, by
// signing with the first key that has a PIN, so a wrong PIN fails here
// (CKR_PIN_INCORRECT, counted by the TPM's dictionary-attack protection)
// and not at the first signature.
func (m *Module) Login(h, userType uint, pin []byte) error {
	key, t, srk, err := m.loginTarget(h, userType, pin)
	if err != nil {
		return err
	}
	defer zero(srk)
	if key != nil {
		d := sha256.Sum256([]byte("simple-tpm-pk11 PIN check"))
		if _, err := t.SignDigest(key.File, srk, pin, d[:], tpm.SignOpts{Hash: crypto.SHA256}); err != nil {
			return keyErr(key, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.initialized {
		return rvErr(CKR_CRYPTOKI_NOT_INITIALIZED, "C_Finalize during C_Login")
	}
	if m.loggedIn {
		return rvErr(CKR_USER_ALREADY_LOGGED_IN, "already logged in")
	}
	m.loggedIn = true
	m.userPIN = bytes.Clone(pin)
	return nil
}

// loginTarget checks a C_Login under the module lock and returns the key
// to check the PIN with (nil when no key has one), the TPM and the SRK PIN.
func (m *Module) loginTarget(h, userType uint, pin []byte) (*Key, *tpm.TPM, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return nil, nil, nil, err
	}
	switch userType {
	case CKU_USER:
	case CKU_SO:
		return nil, nil, nil, rvErr(CKR_USER_TYPE_INVALID, "this token has no security officer; log in as the user")
	case CKU_CONTEXT_SPECIFIC:
		return nil, nil, nil, rvErr(CKR_OPERATION_NOT_INITIALIZED, "no key needs context-specific login")
	default:
		return nil, nil, nil, rvErr(CKR_USER_TYPE_INVALID, "unknown user type %d", userType)
	}
	if m.loggedIn {
		return nil, nil, nil, rvErr(CKR_USER_ALREADY_LOGGED_IN, "already logged in")
	}
	if len(pin) > maxPIN {
		return nil, nil, nil, rvErr(CKR_PIN_LEN_RANGE, "PIN longer than %d bytes, the most a TPM key takes", maxPIN)
	}
	panicPoint("C_Login")
	var key *Key
	for _, k := range m.keys {
		if k.NeedsPIN {
			key = k
			break
		}
	}
	return key, m.tpm, bytes.Clone(m.srkPIN), nil
}

// Logout is C_Logout.
func (m *Module) Logout(h uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return err
	}
	if !m.loggedIn {
		return rvErr(CKR_USER_NOT_LOGGED_IN, "C_Logout without C_Login")
	}
	m.loggedIn = false
	zero(m.userPIN)
	m.userPIN = nil
	return nil
}

// visible reports whether the caller may see an object; callers hold
// m.mu. Private objects (the private key of a key with a PIN, when the
// config gives no key_pin) are not visible while nobody is logged in:
// searches skip them and their handles are invalid, as PKCS#11 2.40
// says of C_Logout (5.6: the application's handles to private objects
// become invalid).
func (m *Module) visible(o *object) bool { return !o.private() || m.loggedIn }

// hiddenPrivate reports whether h is the handle of a private object that
// is not visible because nobody is logged in; callers hold m.mu. Only
// for the log message: the caller still gets an invalid-handle code.
func (m *Module) hiddenPrivate(h uint) bool {
	for _, o := range m.objects {
		if o.handle == h {
			return !m.visible(o)
		}
	}
	return false
}

// object finds a visible object; callers hold m.mu.
func (m *Module) object(h uint) (*object, error) {
	for _, o := range m.objects {
		if o.handle == h && m.visible(o) {
			return o, nil
		}
	}
	return nil, rvErr(CKR_OBJECT_HANDLE_INVALID, "no object %d", h)
}

// FindObjectsInit is C_FindObjectsInit: the search matches every
// attribute of the template exactly.
func (m *Module) FindObjectsInit(h uint, tmpl []Attribute) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return err
	}
	if s.finding {
		return rvErr(CKR_OPERATION_ACTIVE, "a search is already active in session %d", h)
	}
	s.find = []uint{}
	s.finding = true
	for _, o := range m.objects {
		if m.visible(o) && o.matches(tmpl) {
			s.find = append(s.find, o.handle)
		}
	}
	return nil
}

// FindObjects is C_FindObjects.
func (m *Module) FindObjects(h uint, max uint) ([]uint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return nil, err
	}
	if !s.finding {
		return nil, rvErr(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjects without C_FindObjectsInit")
	}
	n := min(uint(len(s.find)), max)
	out := s.find[:n]
	s.find = s.find[n:]
	return out, nil
}

// FindObjectsFinal is C_FindObjectsFinal.
func (m *Module) FindObjectsFinal(h uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return err
	}
	if !s.finding {
		return rvErr(CKR_OPERATION_NOT_INITIALIZED, "C_FindObjectsFinal without C_FindObjectsInit")
	}
	s.find, s.finding = nil, false
	return nil
}

// AttrValue is one answer of C_GetAttributeValue: the value, or the
// CK_RV for that attribute (CKR_ATTRIBUTE_SENSITIVE or
// CKR_ATTRIBUTE_TYPE_INVALID).
type AttrValue struct {
	Value []byte
	RV    uint
}

// GetAttributeValue is C_GetAttributeValue's lookup part; the caller
// applies the buffer rules.
func (m *Module) GetAttributeValue(h, obj uint, types []uint) ([]AttrValue, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return nil, err
	}
	o, err := m.object(obj)
	if err != nil {
		return nil, err
	}
	out := make([]AttrValue, len(types))
	for i, t := range types {
		out[i].Value, out[i].RV = o.attr(t)
	}
	return out, nil
}

// ObjectSize is C_GetObjectSize: the sum of the object's attribute
// values, an honest estimate of what it occupies.
func (m *Module) ObjectSize(h, obj uint) (uint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return 0, err
	}
	o, err := m.object(obj)
	if err != nil {
		return 0, err
	}
	size := 0
	for t := uint(0); t < 0x300; t++ {
		if v, rv := o.attr(t); rv == CKR_OK {
			size += len(v)
		}
	}
	return uint(size), nil
}

// GenerateRandom is C_GenerateRandom, from the TPM's generator.
func (m *Module) GenerateRandom(h uint, b []byte) error {
	t, err := m.sessionTPM(h)
	if err != nil {
		return err
	}
	return t.Random(b)
}

// sessionTPM checks a session handle and returns the TPM.
func (m *Module) sessionTPM(h uint) (*tpm.TPM, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return nil, err
	}
	return m.tpm, nil
}

// SeedRandom is C_SeedRandom: a TPM's generator takes no seed.
func (m *Module) SeedRandom(h uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return err
	}
	return rvErr(CKR_RANDOM_SEED_NOT_SUPPORTED, "the TPM's random generator cannot be seeded")
}

// LegacyParallel is C_GetFunctionStatus and C_CancelFunction, legacy
// functions that answer CKR_FUNCTION_NOT_PARALLEL (PKCS#11 2.40, 5.20).
func (m *Module) LegacyParallel(h uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.session(h); err != nil {
		return err
	}
	return rvErr(CKR_FUNCTION_NOT_PARALLEL, "legacy parallel function")
}

// WaitForSlotEvent is C_WaitForSlotEvent: the one slot never changes.
func (m *Module) WaitForSlotEvent(flags uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	if flags&CKF_DONT_BLOCK != 0 {
		return rvErr(CKR_NO_EVENT, "no slot event")
	}
	return rvErr(CKR_FUNCTION_NOT_SUPPORTED, "blocking C_WaitForSlotEvent: this module's slot never changes")
}

// Unsupported answers the functions a signing token does not have
// (object creation, key generation, encryption, ...).
func (m *Module) Unsupported(fn string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	return rvErr(CKR_FUNCTION_NOT_SUPPORTED, "%s: keys are made with stpm-keygen; the token only signs", fn)
}
