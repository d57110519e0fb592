package lab

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The lab can also say who had the guest's one CPU: once a second it reads
// every process's CPU time from /proc and keeps the busiest of each second.
// A lease that lapsed while lbd was off the CPU (its probes sent late) is
// then matched with what was on it. EDGELB_LAB_CPU=1 turns it on.

const cpuTick = time.Second

// cpuSecond is one second of the guest's CPU: how much was idle, and the
// busiest processes.
type cpuSecond struct {
	at   time.Time
	idle time.Duration
	top  []procCPU
}

type procCPU struct {
	name string
	cpu  time.Duration
}

type cpuWatch struct {
	watcher
	mu      sync.Mutex
	seconds []cpuSecond
}

func startCPUWatch() *cpuWatch {
	w := &cpuWatch{watcher: newWatcher()}
	go w.run()
	return w
}

func (w *cpuWatch) run() {
	defer close(w.done)
	prev, prevIdle := readProcs(), readIdle()
	t := time.NewTicker(cpuTick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			cur, idle := readProcs(), readIdle()
			var top []procCPU
			for pid, p := range cur {
				d := p.cpu - prev[pid].cpu
				if d > 0 {
					top = append(top, procCPU{p.name, d})
				}
			}
			slices.SortFunc(top, func(a, b procCPU) int { return cmp.Compare(b.cpu, a.cpu) })
			w.mu.Lock()
			w.seconds = append(w.seconds, cpuSecond{at: now, idle: idle - prevIdle, top: top[:min(len(top), 6)]})
			w.mu.Unlock()
			prev, prevIdle = cur, idle
		}
	}
}

// summary is one line per second whose CPU was idle less than a tenth.
func (w *cpuWatch) summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, s := range w.seconds {
		if s.idle > cpuTick/10 {
			continue
		}
		fmt.Fprintf(&b, "\n  %s idle %s:", s.at.UTC().Format("15:04:05"), s.idle.Round(10*time.Millisecond))
		for _, p := range s.top {
			fmt.Fprintf(&b, " %s %s,", p.name, p.cpu.Round(10*time.Millisecond))
		}
	}
	return "guest CPU, the busy seconds (busiest processes):" + b.String()
}

// clockTick is the guest's USER_HZ: /proc counts CPU time in 1/100 s.
const clockTick = 10 * time.Millisecond

func readIdle() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 {
		return 0
	}
	n, _ := strconv.ParseInt(f[4], 10, 64)
	return time.Duration(n) * clockTick
}

func readProcs() map[int]procCPU {
	out := map[int]procCPU{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: fields 14 and 15.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		name := string(b[bytes.IndexByte(b, '(')+1 : i])
		f := strings.Fields(string(b[i+2:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		if name == "lbd" {
			if c, err := os.ReadFile(d + "/cmdline"); err == nil {
				a := strings.Split(string(c), "\x00")
				if j := slices.Index(a, "--id"); j >= 0 && j+1 < len(a) {
					name = "lbd:" + a[j+1]
				} else if len(a) > 1 {
					name = "lbd:" + a[1]
				}
			}
		}
		out[pid] = procCPU{name: fmt.Sprintf("%s[%d]", name, pid), cpu: time.Duration(u+s) * clockTick}
	}
	return out
}

// CPUUse is what the CPUs did over a span: their busy time (all CPUs; the
// guest has one), and the processes' CPU time by name ("lbd:<id>" for lbd;
// processes of one name added up).
type CPUUse struct {
	Span, Busy time.Duration
	Procs      map[string]time.Duration
}

// MeasureCPU watches the CPUs for d.
// The guest's cost of a member is its wake-ups more than its work (every
// clock read traps into the emulator), so an idle cluster's CPU is the
// figure that tells whether the guest can carry a timing profile.
func MeasureCPU(d time.Duration) CPUUse {
	p0, i0, t0 := readProcs(), readIdle(), time.Now()
	time.Sleep(d)
	p1, i1 := readProcs(), readIdle()
	u := CPUUse{Span: time.Since(t0), Procs: map[string]time.Duration{}}
	u.Busy = max(time.Duration(runtime.NumCPU())*u.Span-(i1-i0), 0)
	for pid, p := range p1 {
		if c := p.cpu - p0[pid].cpu; c > 0 {
			name, _, _ := strings.Cut(p.name, "[")
			u.Procs[name] += c
		}
	}
	return u
}
