package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write encodes k and stores it at path with mode 0600, atomically (see
// WriteFileAtomic). With overwrite false an existing file is left untouched
// and the error wraps fs.ErrExist.
func Write(path string, k *Key, overwrite bool) error {
	data, err := k.MarshalPEM()
	if err != nil {
		return withPath(err, path)
	}
	return WriteFileAtomic(path, data, 0o600, overwrite)
}

// WriteFileAtomic stores data at path so that path never holds a partial
// file, even after a crash: readers see either the old file (or none) or the
// complete new one. The file gets exactly mode perm (the umask is not
// applied).
//
// The data goes to a temporary file in the same directory (".NAME.tmp-*",
// created with O_EXCL and mode 0600), which is synced and closed, then moved
// into place: with overwrite false by os.Link, which fails with an error
// wrapping fs.ErrExist if path exists, so a key is never replaced by
// accident; with overwrite true by os.Rename, which replaces path in one
// step. The directory is synced last so the new name is durable. The
// temporary file is removed on every failure path; only a crash can leave
// one behind. os.Link needs a file system with hard links.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, overwrite bool) error {
	if perm&^os.ModePerm != 0 {
		return fmt.Errorf("%q: mode %v is not a plain permission mode", path, perm)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		// The temporary name means nothing to the caller; the directory
		// and the reason do.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%q: cannot create a file in %q: %w", path, dir, err)
	}
	tmp := f.Name()
	fail := func(step string, err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == tmp {
			err = pe.Err // the temporary name means nothing to the caller
		}
		err = fmt.Errorf("%q: %s: %w", path, step, err)
		if rerr := os.Remove(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("%q: remove temporary file: %w", path, rerr))
		}
		return err
	}

	if err := writeSyncClose(f, data, perm); err != nil {
		return fail("not written", err)
	}
	if overwrite {
		if err := os.Rename(tmp, path); err != nil {
			return fail("replace", err)
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fail("refusing to overwrite existing file", err)
			}
			return fail("link", err)
		}
		// path now holds the complete file; tmp is a second name for it.
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("%q: written, but removing the temporary file failed: %w", path, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%q: written, but syncing the directory failed: %w", path, err)
	}
	return nil
}

// writeSyncClose sets the mode, writes data, syncs and always closes f,
// returning the first error (joined with a Close error, if any).
func writeSyncClose(f *os.File, data []byte, perm os.FileMode) error {
	err := f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// syncDir flushes the directory entry changes (the link or rename) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}
