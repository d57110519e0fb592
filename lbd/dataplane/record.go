package dataplane

// The record: programmed.json names the IPVS services and VIP addresses this
// engine created, so a restart adopts exactly those and the fence withdraws
// exactly those.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
)

// record is what programmed.json holds.
type record struct {
	Services []string `json:"services"` // "tcp/192.0.2.1:80"
	VIPs     []string `json:"vips"`
}

func (e *Engine) recordPath() string { return filepath.Join(e.cfg.StateDir, "programmed.json") }

// adopt reads the record of a previous run and the kernel's matching state.
func (e *Engine) adopt() error {
	b, err := os.ReadFile(e.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", e.recordPath(), err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("parse %s: %w (delete it to start over; IPVS services it named will then be left alone)", e.recordPath(), err)
	}
	want := map[string]bool{}
	for _, s := range r.Services {
		want[s] = true
	}
	read, have, err := e.readKernel(func(k ipvsdiff.SvcKey) bool { return want[k.String()] })
	if err != nil {
		return err
	}
	for k, sv := range read {
		e.actual[k] = sv
		e.ours[k] = true
	}
	onIf := map[netip.Addr]bool{}
	for _, a := range have {
		onIf[a] = true
	}
	for _, s := range r.VIPs {
		if a, err := netip.ParseAddr(s); err == nil && onIf[a] {
			e.vips[a] = true
		}
	}
	return nil
}

func (e *Engine) save() error {
	var r record
	for k := range e.ours {
		r.Services = append(r.Services, k.String())
	}
	for a := range e.vips {
		r.VIPs = append(r.VIPs, a.String())
	}
	for _, a := range e.pending {
		if !e.vips[a] {
			r.VIPs = append(r.VIPs, a.String())
		}
	}
	sort.Strings(r.Services)
	sort.Strings(r.VIPs)
	b, _ := json.MarshalIndent(r, "", " ")
	if err := os.MkdirAll(e.cfg.StateDir, 0o700); err != nil {
		return err
	}
	tmp := e.recordPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, e.recordPath())
}
