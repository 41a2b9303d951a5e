# simple-tpm-pk11: keep an ssh key inside the TPM.
#
#   make demo    make a key in the TPM (or a throwaway swtpm) and sign with it
#   make test    every test, against real swtpm, openssl and tpm2-tools, then
#                each fuzz target for FUZZTIME, then (as root) make deb-test
#   make build   the commands, into bin/
#   make man     the man pages, into man/
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make deb     a Debian package, into dist/; make deb-test installs, uses
#                and purges it on this machine (as root)

PREFIX  ?= /usr/local
DESTDIR ?=
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli.Version=$(VERSION)
CMDS    := stpm-keygen stpm-sign stpm-verify stpm-bridge stpm-doctor
MODULE  := libsimple-tpm-pk11.so
# Each fuzz target runs this long in `make fuzz` (and so in `make test`).
FUZZTIME ?= 15s
FUZZ    := keyfile:FuzzParse keybackup:FuzzDecrypt config:FuzzParse \
	p11:FuzzParseDigestInfo p11:FuzzPSSParams p11:FuzzFindTemplate \
	p11:FuzzDecodeTemplate p11:FuzzDecodeMechanism

export PATH := /usr/local/go/bin:$(PATH)

# Man pages are written in go-md2man's markdown next to what they
# describe: cmd/NAME/NAME.1.md for each command, module/ and config/ for
# the module and its config file. A new command's page is found by the
# same pattern, as is its completion in contrib/completions/bash/NAME.
MANSRC      := $(wildcard cmd/*/*.[1-9].md module/*.[1-9].md config/*.[1-9].md)
MANPAGES    := $(patsubst %.md,man/%,$(notdir $(MANSRC)))
COMPLETIONS := $(wildcard $(addprefix contrib/completions/bash/,$(CMDS)))
USER_UNITS  := $(wildcard contrib/systemd/user/*.service)

.PHONY: all build man deps test unit lint demo install uninstall fuzz bench clean deb deb-test

all: build

build:
	@mkdir -p bin lib
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(CMDS))
	$(GO) build -trimpath -buildmode=c-shared -o lib/$(MODULE) ./module
	@rm -f lib/libsimple-tpm-pk11.h

vpath %.md $(sort $(dir $(MANSRC)))

man: $(MANPAGES)

man/%: %.md
	@command -v go-md2man >/dev/null || { echo "go-md2man not found: run make deps (Debian package go-md2man)" >&2; exit 1; }
	@mkdir -p man
	go-md2man -in $< -out $@

deps:
	@bash scripts/install-deps.sh

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@bash scripts/vulncheck.sh

# Unit tests run against the in-process TPM simulator; tests/ and
# internal/swtpmtest start real swtpm processes. deps has installed every
# tool, so a missing one is a failure here, not a skip (CI=true). As root
# the Debian package is tested last, alone: it installs into /usr, which
# other tests must not see.
test: export CI ?= true
test: deps lint
	$(GO) test -race -timeout 15m ./...
	@$(MAKE) --no-print-directory fuzz
	@bash scripts/deb-test.sh --if-possible

unit:
	$(GO) test -race ./tpm/ ./keyfile/ ./keybackup/ ./config/ ./internal/cli/

demo: deps build
	@bash scripts/demo.sh

# Measurements, not tests: prints a table and writes docs/PERFORMANCE.md.
bench: deps build
	@bash scripts/bench.sh

# Anything a fuzzer finds lands in PKG/testdata/fuzz and from then on runs
# as a regression test in every `go test`.
fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh $(FUZZ)

# The p11-kit module file names the installed path (without DESTDIR). p11-kit
# reads /usr/share/p11-kit/modules: a PREFIX=/usr install is picked up as
# is; other prefixes register with "stpm-bridge register". LIBDIR moves
# the module: the Debian package puts it in the multiarch pkcs11 directory.
LIBDIR         ?= $(PREFIX)/lib
MANDIR         ?= $(PREFIX)/share/man
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
SYSTEMDUSERDIR ?= $(PREFIX)/lib/systemd/user
P11KIT_MODULES := $(PREFIX)/share/p11-kit/modules

install: build man
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR) $(DESTDIR)$(P11KIT_MODULES) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(SYSTEMDUSERDIR)
	install -m 0755 $(addprefix bin/,$(CMDS)) $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 lib/$(MODULE) $(DESTDIR)$(LIBDIR)/
	sed 's|^module: .*|module: $(LIBDIR)/libsimple-tpm-pk11.so|' contrib/simple-tpm-pk11.module > $(DESTDIR)$(P11KIT_MODULES)/simple-tpm-pk11.module
	chmod 0644 $(DESTDIR)$(P11KIT_MODULES)/simple-tpm-pk11.module
	for p in $(MANPAGES); do \
		install -d $(DESTDIR)$(MANDIR)/man$${p##*.} && \
		install -m 0644 $$p $(DESTDIR)$(MANDIR)/man$${p##*.}/ || exit 1; \
	done
	$(if $(COMPLETIONS),install -m 0644 $(COMPLETIONS) $(DESTDIR)$(BASHCOMPDIR)/)
	for u in $(USER_UNITS); do \
		sed 's|/usr/bin/|$(PREFIX)/bin/|' $$u > $(DESTDIR)$(SYSTEMDUSERDIR)/$${u##*/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUSERDIR)/$${u##*/} || exit 1; \
	done

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(CMDS)) $(DESTDIR)$(LIBDIR)/$(MODULE) \
		$(DESTDIR)$(P11KIT_MODULES)/simple-tpm-pk11.module \
		$(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(notdir $(COMPLETIONS))) \
		$(addprefix $(DESTDIR)$(SYSTEMDUSERDIR)/,$(notdir $(USER_UNITS)))
	for p in $(notdir $(MANPAGES)); do rm -f $(DESTDIR)$(MANDIR)/man$${p##*.}/$$p || exit 1; done

# dist/simple-tpm-pk11_VERSION_ARCH.deb, built with dpkg-deb alone.
deb: deps
	@bash scripts/deb.sh

# Installs that package on this machine, uses it through p11-kit, and
# purges it again: needs root.
deb-test:
	@bash scripts/deb-test.sh

clean:
	rm -rf bin lib man dist
