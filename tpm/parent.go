package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// OwnerParent is the parent handle key files use for "the storage primary
// of the owner hierarchy, made from the standard template" (TSS2 key file
// spec, section "Parent"): TPM_RH_OWNER.
const OwnerParent uint32 = 0x40000001

// storagePrimaryECC is the TCG Provisioning Guidance template H-2 (ECC
// NIST P-256 storage key) with an EMPTY unique field, which the TSS2 key
// file spec requires for parent 0x40000001. go-tpm's ECCSRKTemplate puts
// 32 zero bytes in unique; that is a different primary, and keys made
// under it do not load where other TSS2 tools look for their parent.
func storagePrimaryECC() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			NoDA:                true,
			Restricted:          true,
			Decrypt:             true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: aes128CFB(),
			Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
			CurveID:   tpm2.TPMECCNistP256,
			KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// storagePrimaryRSA is template H-1 (RSA 2048) with an empty unique, used
// for key files that set rsaParent.
func storagePrimaryRSA() tpm2.TPMTPublic {
	t := storagePrimaryECC()
	t.Type = tpm2.TPMAlgRSA
	t.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: aes128CFB(),
		Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
		KeyBits:   2048,
	})
	t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	return t
}

func aes128CFB() tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
}

// Parent is a loaded storage key that keys are created, imported and
// loaded under.
type Parent struct {
	Handle tpm2.TPMHandle
	Name   tpm2.TPM2BName
	Public tpm2.TPMTPublic
	auth   []byte
	// hmac is true when the parent has an auth value: then its
	// authorization goes through a salted HMAC session, never in clear.
	hmac bool
}

// LoadParent makes the parent a key file names usable: for OwnerParent
// it creates the standard storage primary (deterministic: the same key
// every time on the same TPM), for a persistent handle it reads its
// public area. auth is the owner hierarchy's auth value for OwnerParent
// and the persistent key's own auth value otherwise (the SRK PIN).
func (c *Conn) LoadParent(handle uint32, rsaParent bool, auth []byte) (*Parent, error) {
	switch {
	case handle == OwnerParent:
		tmpl := storagePrimaryECC()
		if rsaParent {
			tmpl = storagePrimaryRSA()
		}
		var salt *Parent
		if len(auth) > 0 {
			var err error
			if salt, err = c.saltKey(); err != nil {
				return nil, err
			}
		}
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: authSession(auth, salt)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(c.tpm)
		if salt != nil {
			if ferr := c.flush(salt.Handle); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err != nil {
			return nil, c.authErr(err, "SRK PIN (owner hierarchy authorization)")
		}
		c.track(rsp.ObjectHandle)
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, tpmErr("storage primary public area", err)
		}
		// The primary's own auth is empty; the owner auth was only
		// needed to create it.
		return &Parent{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: *pub}, nil
	case handle>>24 == 0x81:
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(c.tpm)
		if err != nil {
			if errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0) {
				return nil, newErr(ErrNoParent, err,
					"make one with 'tpm2_createprimary -c p.ctx && tpm2_evictcontrol -c p.ctx "+fmt.Sprintf("0x%08x", handle)+"', or use the default parent",
					"no persistent parent key at 0x%08x in this TPM", handle)
			}
			return nil, tpmErr(fmt.Sprintf("read parent 0x%08x", handle), err)
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, tpmErr("parent public area", err)
		}
		if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.Decrypt {
			return nil, newErr(ErrNoParent, nil, "use a storage key (restricted, decrypt) as parent",
				"persistent key 0x%08x is not a storage key", handle)
		}
		return &Parent{Handle: tpm2.TPMHandle(handle), Name: rsp.Name, Public: *pub, auth: auth, hmac: len(auth) > 0}, nil
	default:
		return nil, newErr(ErrNoParent, nil, "use 0x40000001 (the owner hierarchy) or a persistent handle 0x81xxxxxx",
			"unsupported parent handle 0x%08x", handle)
	}
}

// saltKey makes a storage key in the null hierarchy, which needs no
// authorization, for salting the session that carries the owner
// hierarchy's auth value: without a salt the session key derives from the
// auth value alone and a recorded session could be attacked offline. The
// null hierarchy's seed changes at every TPM reset, so the key is made
// fresh each time and flushed as soon as the session has started.
func (c *Conn) saltKey() (*Parent, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHNull,
		InPublic:      tpm2.New2B(storagePrimaryECC()),
	}.Execute(c.tpm)
	if err != nil {
		return nil, tpmErr("make the session salt key", err)
	}
	c.track(rsp.ObjectHandle)
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, tpmErr("session salt key public area", err)
	}
	return &Parent{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: *pub}, nil
}

// authHandle returns the parent as an authorized handle for Create,
// Import and Load.
func (p *Parent) authHandle(encrypt bool) tpm2.AuthHandle {
	var s tpm2.Session
	switch {
	case p.hmac || encrypt:
		opts := []tpm2.AuthOption{tpm2.Auth(p.auth), tpm2.Salted(p.Handle, p.Public)}
		if encrypt {
			opts = append(opts, tpm2.AESEncryption(128, tpm2.EncryptIn))
		}
		s = tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
	default:
		s = tpm2.PasswordAuth(nil)
	}
	return tpm2.AuthHandle{Handle: p.Handle, Name: p.Name, Auth: s}
}

// authSession authorizes an entity with auth: an empty auth goes as an
// empty password (nothing secret to hide); a non-empty one only ever as an
// HMAC, salted to salt when a salt key is at hand.
func authSession(auth []byte, salt *Parent) tpm2.Session {
	if len(auth) == 0 {
		return tpm2.PasswordAuth(nil)
	}
	opts := []tpm2.AuthOption{tpm2.Auth(auth)}
	if salt != nil {
		opts = append(opts, tpm2.Salted(salt.Handle, salt.Public))
	}
	return tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
}
