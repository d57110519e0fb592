// Package syncd starts the kernel's IPVS connection synchronisation daemons
// (master and backup, on every member), so the host that takes a VIP over
// already knows the established connections. cloudflare/ipvs does not wrap
// these commands; they are sent over generic netlink here.
package syncd

import (
	"errors"
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// From include/uapi/linux/ip_vs.h.
const (
	cmdNewDaemon = 9
	cmdDelDaemon = 10
	attrDaemon   = 3

	daemonAttrState   = 1
	daemonAttrMcastIf = 2
	daemonAttrSyncID  = 3
	daemonAttrMaxLen  = 4

	// StateMaster sends this host's connections; StateBackup receives others'.
	StateMaster = 1
	StateBackup = 2
)

// MasterMaxLen is the master's largest sync message (UDP payload), about 6
// IPv4 connections. The kernel sends a message when the next connection
// does not fit in it, else when it is 2 s old (ip_vs_sync.c): at the
// interface MTU's 1472 bytes, about 40 connections, a connection opened
// just before a takeover reached the new owner 2-3 s later under the HA
// scenarios' traffic (packet captures, 2026-12-05), and one whose client
// was silent failed. Smaller messages go out as soon as a few connections
// change; the cost is more, smaller sync packets.
const MasterMaxLen = 256

func send(cmd uint8, state uint32, ifname string, syncID uint32) error {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("dial generic netlink: %w", err)
	}
	defer c.Close()
	fam, err := c.GetFamily("IPVS")
	if err != nil {
		return fmt.Errorf("IPVS generic netlink family: %w", err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(attrDaemon, func(n *netlink.AttributeEncoder) error {
		n.Uint32(daemonAttrState, state)
		if cmd == cmdNewDaemon {
			n.String(daemonAttrMcastIf, ifname)
			n.Uint32(daemonAttrSyncID, syncID)
			if state == StateMaster {
				n.Uint16(daemonAttrMaxLen, MasterMaxLen)
			}
		}
		return nil
	})
	data, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = c.Execute(genetlink.Message{Header: genetlink.Header{Command: cmd, Version: fam.Version}, Data: data},
		fam.ID, netlink.Request|netlink.Acknowledge)
	return err
}

// Start runs the master and backup daemons on ifname with syncID, the
// master's messages at most MasterMaxLen. Daemons already running are left
// as they are (one an older lbd started keeps its message size until the
// daemons are restarted).
func Start(ifname string, syncID uint32) error {
	for _, st := range []uint32{StateMaster, StateBackup} {
		if err := send(cmdNewDaemon, st, ifname, syncID); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("start IPVS sync daemon (state %d) on %s, syncid %d: %w", st, ifname, syncID, err)
		}
	}
	return nil
}

// Stop stops both daemons.
func Stop() error {
	var errs []error
	for _, st := range []uint32{StateMaster, StateBackup} {
		if err := send(cmdDelDaemon, st, "", 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
