package uml

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// InGuest reports whether this process runs inside a guest started by Run (as init or
// as one of init's descendants).
func InGuest() bool { return os.Getenv(specEnv) != "" }

// MaybeGuestInit turns the process into the guest's init when it is PID 1 of a guest
// booted by Run, and never returns then. Elsewhere it returns at once. Call it first
// thing in main (or TestMain) of any program used as Options.Init.
func MaybeGuestInit() {
	if os.Getpid() != 1 || os.Getenv(specEnv) == "" {
		return
	}
	code := guestInit(os.Getenv(specEnv))
	guestPowerOff(code)
}

// glog writes init diagnostics to the console (con0 -> the host's console.log).
func glog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "umlinit: "+format+"\n", args...)
}

func guestInit(specPath string) (exit int) {
	mountAll()
	b, err := os.ReadFile(specPath)
	if err != nil {
		glog("read spec: %v", err)
		return 125
	}
	var sp spec
	if err := json.Unmarshal(b, &sp); err != nil {
		glog("parse spec: %v", err)
		return 125
	}
	exitPath := filepath.Join(sp.WorkDir, exitFile)
	defer func() {
		writeSync(exitPath, strconv.Itoa(exit)+"\n")
	}()

	if err := linkUp("lo"); err != nil {
		glog("lo up: %v", err)
	}

	stdout := openConsole("/dev/tty1")
	stderr := openConsole("/dev/tty2")
	devnull, _ := os.Open("/dev/null")

	env := append([]string{}, sp.Env...)
	env = append(env, specEnv+"="+specPath) // InGuest() in descendants
	argv0 := sp.Argv[0]
	if !strings.Contains(argv0, "/") {
		if p, err := lookPath(argv0, env); err == nil {
			argv0 = p
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGCHLD)

	writeSync(filepath.Join(sp.WorkDir, bootFile), strconv.FormatInt(time.Now().UnixNano()-sp.StartedUnix, 10))
	proc, err := os.StartProcess(argv0, sp.Argv, &os.ProcAttr{
		Dir:   sp.Dir,
		Env:   env,
		Files: []*os.File{devnull, stdout, stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		fmt.Fprintf(stderr, "umlrun: start %s: %v\n", sp.Argv[0], err)
		return 127
	}
	pid := proc.Pid

	stopPath := filepath.Join(sp.WorkDir, stopFile)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var killAt time.Time
	for {
		// Reap everything: PID 1 inherits every orphan in the guest.
		for {
			var ws unix.WaitStatus
			wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err != nil || wpid <= 0 {
				break
			}
			if wpid == pid {
				switch {
				case ws.Exited():
					return ws.ExitStatus()
				case ws.Signaled():
					return 128 + int(ws.Signal())
				}
			}
		}
		select {
		case <-sigs:
		case <-tick.C:
			if killAt.IsZero() {
				if _, err := os.Stat(stopPath); err == nil {
					glog("stop requested: SIGINT to the command")
					unix.Kill(-pid, unix.SIGINT)
					killAt = time.Now().Add(time.Duration(sp.GraceMillis) * time.Millisecond)
				}
			} else if time.Now().After(killAt) {
				glog("grace over: SIGKILL to the command")
				unix.Kill(-pid, unix.SIGKILL)
				killAt = time.Now().Add(time.Hour)
			}
		}
	}
}

func mountAll() {
	mount := func(src, target, fstype string, flags uintptr, data string) bool {
		os.MkdirAll(target, 0o755)
		if err := unix.Mount(src, target, fstype, flags, data); err != nil {
			glog("mount %s on %s: %v", fstype, target, err)
			return false
		}
		return true
	}
	// hostfs shows the host's /proc, /sys, /dev and /run; cover them with the guest's own.
	mount("proc", "/proc", "proc", 0, "")
	mount("sysfs", "/sys", "sysfs", 0, "")
	// The kernel usually mounts devtmpfs on /dev itself (DEVTMPFS_MOUNT).
	if !isMountPoint("/dev", "devtmpfs") {
		mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	}
	mount("devpts", "/dev/pts", "devpts", 0, "ptmxmode=0666")
	mount("tmpfs", "/dev/shm", "tmpfs", 0, "")
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		os.Symlink(target, "/dev/"+name)
	}
	mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
	os.MkdirAll("/run/netns", 0o755)
	os.MkdirAll("/run/lock", 0o755)
	// bpffs and cgroup are not needed; debugfs neither.
}

func isMountPoint(dir, fstype string) bool {
	b, _ := os.ReadFile("/proc/mounts")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[1] == dir && f[2] == fstype {
			return true
		}
	}
	return false
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// openConsole opens a UML console in raw output mode (no \n -> \r\n).
func openConsole(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		glog("open %s: %v (output goes to the console log)", path, err)
		return os.Stderr
	}
	if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
		unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
	}
	return f
}

func writeSync(path, content string) {
	f, err := os.Create(path)
	if err != nil {
		glog("write %s: %v", path, err)
		return
	}
	f.WriteString(content)
	f.Sync()
	f.Close()
}

func guestPowerOff(code int) {
	glog("command exited %d; powering off", code)
	// Let the consoles drain, then flush hostfs and stop the kernel.
	unix.Sync()
	time.Sleep(50 * time.Millisecond)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(code)
}

func lookPath(file string, env []string) (string, error) {
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, d := range filepath.SplitList(path) {
		p := filepath.Join(d, file)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH", file)
}
