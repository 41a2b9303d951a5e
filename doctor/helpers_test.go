package doctor

import (
	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

func configKey(label string, line int) config.Key {
	return config.Key{Path: "/nonexistent/" + label + ".key", Label: label, Line: line}
}

// nopKey stands for a key file that parsed.
func nopKey() *keyfile.Key { return &keyfile.Key{} }
