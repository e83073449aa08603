# Build and install mosix-rs on a node.
#
#   make                       build the suite (cargo build --release)
#   make install               install it under PREFIX (default /usr/local), as root
#   make uninstall             remove what install put there (never /etc/mosix's secret or edits)
#   make deb                   build target/debian/mosix-rs_*.deb (needs: cargo install cargo-deb)
#
# Variables: PREFIX (/usr/local), DESTDIR (staging root, empty), SYSCONFDIR (/etc),
# UNITDIR (/etc/systemd/system under /usr/local, else PREFIX/lib/systemd/system),
# PROFILE (release; debug for a debug build), CARGO_TARGET_DIR (target).
# What goes where: README.md, "Running a real cluster" (tested by tests/cluster/install.rs).

PREFIX      ?= /usr/local
DESTDIR     ?=
SYSCONFDIR  ?= /etc
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/mosix-rs
BASHDIR     ?= $(PREFIX)/share/bash-completion/completions
ZSHDIR      ?= $(PREFIX)/share/zsh/site-functions
FISHDIR     ?= $(PREFIX)/share/fish/vendor_completions.d
ifeq ($(PREFIX),/usr/local)
UNITDIR     ?= $(SYSCONFDIR)/systemd/system
else
UNITDIR     ?= $(PREFIX)/lib/systemd/system
endif
CARGO       ?= cargo
PROFILE     ?= release
CARGO_TARGET_DIR ?= target
BUILT       := $(CARGO_TARGET_DIR)/$(PROFILE)
CARGO_PROFILE := $(if $(filter debug,$(PROFILE)),dev,$(PROFILE))

# The suite's programs (setpe also starts the stubs guests are rebuilt in).
TOOLS := setpe mosctl mon mosrun migrate mps mtop mosq moskillall mostimeof tune mtune vcluster
MAN   := $(wildcard man/*.[1-8])

.PHONY: all build install uninstall deb
all: build

build:
	$(CARGO) build --locked --profile $(CARGO_PROFILE) --workspace --bins

install:
	@for t in $(TOOLS); do test -x $(BUILT)/$$t || { \
	    echo "make install: $(BUILT)/$$t is missing; run make (PROFILE=$(PROFILE)) first" >&2; exit 1; }; done
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix $(BUILT)/,$(TOOLS)) $(DESTDIR)$(BINDIR)/
	# runon, runhome, nomig, …: links to mosrun beside them (etc/wrappers, checked by mosrun's tests).
	cp -P etc/wrappers/* $(DESTDIR)$(BINDIR)/
	@for p in $(MAN); do s=$${p##*.}; \
	    install -d $(DESTDIR)$(MANDIR)/man$$s && install -m 0644 $$p $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done
	install -d $(DESTDIR)$(BASHDIR) $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR)
	install -m 0644 etc/completions/bash/* $(DESTDIR)$(BASHDIR)/
	install -m 0644 etc/completions/zsh/* $(DESTDIR)$(ZSHDIR)/
	install -m 0644 etc/completions/fish/* $(DESTDIR)$(FISHDIR)/
	install -d $(DESTDIR)$(UNITDIR)
	install -m 0644 etc/mosix.service $(DESTDIR)$(UNITDIR)/mosix.service
	install -d $(DESTDIR)$(DOCDIR)
	install -m 0644 etc/mosix.map $(DESTDIR)$(DOCDIR)/mosix.map.example
	install -m 0644 etc/mosix/mosix.toml $(DESTDIR)$(DOCDIR)/mosix.toml.example
	install -m 0644 etc/grafana/mosix-dashboard.json $(DESTDIR)$(DOCDIR)/grafana-dashboard.json
	# /etc/mosix: the node's configuration; an existing mosix.toml is never replaced.
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/mosix
	test -e $(DESTDIR)$(SYSCONFDIR)/mosix/mosix.toml || \
	    install -m 0644 etc/mosix/mosix.toml $(DESTDIR)$(SYSCONFDIR)/mosix/mosix.toml

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(TOOLS) $(notdir $(wildcard etc/wrappers/*)))
	@for p in $(MAN); do s=$${p##*.}; f=$${p##*/}; rm -f $(DESTDIR)$(MANDIR)/man$$s/$$f; done
	rm -f $(addprefix $(DESTDIR)$(BASHDIR)/,$(notdir $(wildcard etc/completions/bash/*)))
	rm -f $(addprefix $(DESTDIR)$(ZSHDIR)/,$(notdir $(wildcard etc/completions/zsh/*)))
	rm -f $(addprefix $(DESTDIR)$(FISHDIR)/,$(notdir $(wildcard etc/completions/fish/*)))
	rm -f $(DESTDIR)$(UNITDIR)/mosix.service
	rm -rf $(DESTDIR)$(DOCDIR)
	@echo "kept $(SYSCONFDIR)/mosix and $(SYSCONFDIR)/mosix.map (the node's configuration and secret)"

# The package installs to /usr (bin, share/man, completions, lib/systemd/system) and
# /etc/mosix/mosix.toml as a conffile; its contents are [package.metadata.deb] in bin/setpe.
deb: build
	$(CARGO) deb --package setpe --no-build --profile $(CARGO_PROFILE) --output $(CARGO_TARGET_DIR)/debian
