// Package netns runs code and starts processes inside named network namespaces
// (/run/netns/NAME, as made by `ip netns add`) without `ip netns exec`: in the UML
// guest every process start costs tens to hundreds of milliseconds, so switching a
// thread is much cheaper than spawning a helper.
//
// The pattern: a goroutine locks its OS thread, setns(2)s it into the namespace, does
// its work there and returns without unlocking, so the Go runtime discards the thread
// instead of reusing it in the wrong namespace.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path of a named namespace.
func Path(name string) string { return "/run/netns/" + name }

// Enter locks the calling goroutine to its thread and moves the thread into the named
// namespace. The goroutine must not unlock the thread afterwards; when it returns, the
// thread is thrown away. An empty name does nothing.
func Enter(name string) error {
	if name == "" {
		return nil
	}
	runtime.LockOSThread()
	f, err := os.Open(Path(name))
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", name, err)
	}
	return nil
}

// Do runs f inside the named namespace and waits for it. Sockets f opens stay in that
// namespace and may be used from any goroutine afterwards.
func Do(name string, f func() error) error {
	if name == "" {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		if err := Enter(name); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Start starts cmd inside the named namespace (the child inherits the thread's
// namespace at fork). Do not set cmd.SysProcAttr.Pdeathsig: the forking thread is
// discarded right after, which would kill the child.
func Start(name string, cmd *exec.Cmd) error {
	return Do(name, cmd.Start)
}

// WriteSysctl writes /proc/sys/<key with dots as slashes> in the named namespace.
func WriteSysctl(name, key, value string) error {
	return Do(name, func() error {
		return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
	})
}

// ReadSysctl reads a sysctl in the named namespace.
func ReadSysctl(name, key string) (string, error) {
	var out string
	err := Do(name, func() error {
		b, err := os.ReadFile(sysctlPath(key))
		out = string(b)
		return err
	})
	return out, err
}

func sysctlPath(key string) string {
	b := []byte(key)
	for i, c := range b {
		if c == '.' {
			b[i] = '/'
		}
	}
	return "/proc/sys/" + string(b)
}
