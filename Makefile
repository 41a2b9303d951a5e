# simple-tpm-pk11: keep an ssh key inside the TPM.
#
#   make demo    make a key in the TPM (or a throwaway swtpm) and sign with it
#   make test    every test, against real swtpm, openssl and tpm2-tools
#   make build   the commands, into bin/
#   make install PREFIX=/usr/local [DESTDIR=...]

PREFIX  ?= /usr/local
DESTDIR ?=
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli.Version=$(VERSION)
CMDS    := stpm-keygen stpm-sign stpm-verify
MODULE  := libsimple-tpm-pk11.so
# Each fuzz target runs this long in `make fuzz`.
FUZZTIME ?= 20s

export PATH := /usr/local/go/bin:$(PATH)

.PHONY: all build deps test unit lint demo install uninstall fuzz clean

all: build

build:
	@mkdir -p bin lib
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(CMDS))
	$(GO) build -trimpath -buildmode=c-shared -o lib/$(MODULE) ./module
	@rm -f lib/libsimple-tpm-pk11.h

deps:
	@bash scripts/install-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Unit tests run against the in-process TPM simulator; tests/ and
# internal/swtpmtest start real swtpm processes. CI=true turns a missing
# tool into a failure instead of a skip.
test: deps lint
	$(GO) test -race -timeout 15m ./...

unit:
	$(GO) test -race ./tpm/ ./keyfile/ ./keybackup/ ./config/ ./internal/cli/

demo: deps build
	@bash scripts/demo.sh

fuzz:
	$(GO) test ./keyfile/ -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./keybackup/ -run '^$$' -fuzz FuzzDecrypt -fuzztime $(FUZZTIME)
	$(GO) test ./config/ -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib
	install -m 0755 $(addprefix bin/,$(CMDS)) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 lib/$(MODULE) $(DESTDIR)$(PREFIX)/lib/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(CMDS)) $(DESTDIR)$(PREFIX)/lib/$(MODULE)

clean:
	rm -rf bin lib
