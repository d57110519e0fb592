package uml

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// The guest runs the project's own UML kernel, built from Debian's linux-source-6.1 by
// scripts/uml-kernel.sh, patched with patches/*.patch and with kernel.config merged
// over the um defconfig: Debian's linux.uml lacks nftables' ip, ip6 and inet families
// (NF_TABLES_IPV4/IPV6/INET), which the edge hosts' kernels have and lbd's rules use,
// and its clock reads trap (patches/um-vdso-clock.patch). Everything is built in, so
// the guest loads no modules.

//go:embed kernel.config
var kernelConfig []byte

//go:embed patches/*.patch
var patches embed.FS

// KernelEnv, when set, is the path of the UML kernel to boot instead of the one built
// for kernel.config (for trying a kernel before its fragment is committed). A
// modules.builtin must sit beside it.
const KernelEnv = "EDGELB_UML_KERNEL"

// FastClockEnv=off boots the guest with its vDSO clock off (every clock read traps
// into UML, patches/um-vdso-clock.patch), to measure what the clock costs.
const FastClockEnv = "EDGELB_UML_FASTCLOCK"

// KernelConfigHash is the cache key scripts/uml-kernel.sh files the kernel under: the
// first 12 hex digits of the sha256 of kernel.config followed by the patches, in the
// byte order of their names (the script sorts them so too).
func KernelConfigHash() string {
	h := sha256.New()
	h.Write(kernelConfig)
	names, err := fs.Glob(patches, "patches/*.patch") // sorted
	if err != nil {
		panic(err) // a constant, valid pattern
	}
	for _, n := range names {
		b, err := patches.ReadFile(n)
		if err != nil {
			panic(err) // embedded: cannot fail
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// cacheDir is where the project's builds cache what survives between runs, as the
// scripts spell it: $EDGELB_CACHE, else $XDG_CACHE_HOME/edgelb, else ~/.cache/edgelb.
func cacheDir() (string, error) {
	if d := os.Getenv("EDGELB_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "edgelb"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("uml: finding the cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "edgelb"), nil
}

// KernelPath returns the UML kernel to boot: $EDGELB_UML_KERNEL when set, else the
// kernel scripts/uml-kernel.sh built for this kernel.config
// (<cache>/uml-kernel/<linux-source version>-<hash>/linux; the newest when the source
// package was upgraded in between).
func KernelPath() (string, error) {
	if p := os.Getenv(KernelEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("uml: %s=%s: %w", KernelEnv, p, err)
		}
		return filepath.Abs(p)
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	hash := KernelConfigHash()
	found, _ := filepath.Glob(filepath.Join(cache, "uml-kernel", "*-"+hash, "linux"))
	if len(found) == 0 {
		return "", fmt.Errorf("uml: no guest kernel built for integration/uml/kernel.config (hash %s) under %s; build it with scripts/uml-kernel.sh (as root; tens of minutes cold, see docs/DEVELOPING.md) or point %s at one",
			hash, filepath.Join(cache, "uml-kernel"), KernelEnv)
	}
	sort.Slice(found, func(i, j int) bool { return modTime(found[i]) > modTime(found[j]) })
	return found[0], nil
}

func modTime(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.ModTime().UnixNano()
}
