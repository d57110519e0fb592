package cli

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A snapshot file is:
//
//	"EDGELBSNAP\n"                magic, 11 bytes
//	uvarint N                      length of the header
//	N bytes                        edgelb.v1.SnapshotHeader (protobuf)
//	header.size bytes              edgelb.raft.v1.Snapshot (protobuf), SHA-256 in the header
//
// The header is the server's, unchanged, so a restore can be checked end to
// end: lbctl verifies the checksum before sending, lbd again on receipt.
const snapshotMagic = "EDGELBSNAP\n"

// maxSnapshotHeader bounds the header read from a file.
const maxSnapshotHeader = 1 << 16

// snapshotChunk is the data sent per restore message (the server's limit is 4 MiB).
const snapshotChunk = 1 << 20

func (a *app) snapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Back up and restore the cluster's replicated state",
		Long: `Back up and restore the replicated state: virtual services, address pools
and the member table, as one member holds it at one revision.

save reads the answering member's own replica, and only when that member can
vouch for it: it knows a leader and has caught up with it. A member without a
leader (no quorum), removed from the cluster or still catching up refuses, since
its replica may be empty or old. With --stale it saves anyway and the file
records that it is stale, why, and its revision; restoring such a file needs
--allow-stale. (A cluster that lost its quorum for good is recovered from the
survivor's raft log with lbd recover, docs/OPERATIONS.md §8, not from a file.)

restore replaces the cluster's services and pools through the raft log; the
member table stays the running cluster's. Both need the admin role.`,
		Example: `  lbctl snapshot save /var/backups/edgelb/$(date +%F).snap
  lbctl snapshot inspect /var/backups/edgelb/2026-01-02.snap
  lbctl snapshot restore /var/backups/edgelb/2026-01-02.snap --yes`,
	}
	c.AddCommand(a.snapshotSaveCmd(), a.snapshotRestoreCmd(), a.snapshotInspectCmd())
	return c
}

func (a *app) snapshotSaveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save the state to FILE (written atomically; - for stdout)",
		Example: `  lbctl snapshot save backup.snap
  lbctl --endpoints lb3:7700 snapshot save - > backup.snap
  lbctl --endpoints lb3:7700 --stale snapshot save lb3-stale.snap   # a member without a leader`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			stream, err := conn.Cluster.SaveSnapshot(ctx, &edgelbv1.SaveSnapshotRequest{})
			if err != nil {
				return err
			}
			var hdr *edgelbv1.SnapshotHeader
			var data bytes.Buffer
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if hdr == nil {
					hdr = resp.GetHeader()
					if hdr == nil {
						return errors.New("the server sent no snapshot header")
					}
				}
				data.Write(resp.GetData())
			}
			if hdr == nil {
				return errors.New("the server sent nothing")
			}
			if err := checkSnapshot(hdr, data.Bytes()); err != nil {
				return fmt.Errorf("received snapshot is damaged: %w", err)
			}
			if err := writeSnapshotFile(args[0], hdr, data.Bytes(), a.stdout); err != nil {
				return err
			}
			out := a.stdout
			if args[0] == "-" {
				out = a.stderr
			}
			if a.format.Machine() && args[0] != "-" {
				return output.Message(a.stdout, a.format, hdr)
			}
			stale := ""
			if hdr.GetStale() {
				stale = "STALE "
			}
			fmt.Fprintf(out, "saved %srevision %d from member %s: %d virtual services, %d address pools, %d members (%d bytes, sha256 %x)\n",
				stale, hdr.GetRevision(), hdr.GetMemberId(), hdr.GetVirtualServices(), hdr.GetAddressPools(), hdr.GetMembers(), hdr.GetSize(), hdr.GetSha256())
			return nil
		}),
	}
}

func (a *app) snapshotRestoreCmd() *cobra.Command {
	var yes, allowStale bool
	c := &cobra.Command{
		Use:   "restore FILE --yes",
		Short: "Replace the cluster's services and pools with FILE's",
		Long: `Replace the cluster's virtual services and address pools with the snapshot's,
through the raft log: every member applies it at the same revision, and
watchers (the cloud-controller-manager) see a DELETE for what goes and a PUT
for what is restored.

What stays: the member table (members are hosts, not backup content); a
service's current owner when it is still a member (the snapshot's owner if
that is a member, else the leader assigns one); current health verdicts for
backends that exist on both sides. Generations rise above both, so a client
holding a pre-restore generation cannot update blindly.

The file's checksum is verified before anything is sent. Without --yes,
restore only prints what the file holds. A stale file (saved with --stale from
a member that could not vouch for its replica) also needs --allow-stale: it
may hold less than the cluster had.`,
		Example: `  lbctl snapshot restore backup.snap           # show what would be restored
  lbctl snapshot restore backup.snap --yes
  lbctl snapshot restore lb3-stale.snap --yes --allow-stale`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			hdr, data, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			if !yes {
				a.printSnapshotHeader(args[0], hdr)
				return usagef("restore replaces every virtual service and address pool of the cluster; run again with --yes to do it")
			}
			if hdr.GetStale() && !allowStale {
				a.printSnapshotHeader(args[0], hdr)
				return usagef("%s is a stale snapshot: member %s saved revision %d without being able to vouch for it (%s); it may hold less than the cluster had. Run again with --allow-stale to restore it anyway",
					args[0], hdr.GetMemberId(), hdr.GetRevision(), hdr.GetStaleReason())
			}
			if hdr.GetStale() {
				fmt.Fprintf(a.stderr, "WARNING: restoring a stale snapshot: member %s at revision %d (%s)\n", hdr.GetMemberId(), hdr.GetRevision(), hdr.GetStaleReason())
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			// A restore carries the whole state: allow for a large upload.
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			stream, err := conn.Cluster.RestoreSnapshot(ctx)
			if err != nil {
				return err
			}
			first := true
			for rest := data; first || len(rest) > 0; first = false {
				n := min(len(rest), snapshotChunk)
				req := &edgelbv1.RestoreSnapshotRequest{Data: rest[:n]}
				if first {
					req.Header = hdr
				}
				if err := stream.Send(req); err != nil {
					if errors.Is(err, io.EOF) {
						break // the server answered early; CloseAndRecv has its status
					}
					return err
				}
				rest = rest[n:]
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			fmt.Fprintf(a.stdout, "restored at revision %d: %d virtual services, %d address pools (removed %d services and %d pools not in the snapshot)\n",
				resp.GetRevision(), resp.GetVirtualServices(), resp.GetAddressPools(), resp.GetRemovedVirtualServices(), resp.GetRemovedAddressPools())
			return nil
		}),
	}
	c.Flags().BoolVar(&yes, "yes", false, "really replace the cluster's state")
	c.Flags().BoolVar(&allowStale, "allow-stale", false, "also restore a file saved with --stale (it may hold less than the cluster had)")
	return c
}

func (a *app) snapshotInspectCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "inspect FILE",
		Short:   "Verify FILE's checksum and print its header (no server needed)",
		Example: `  lbctl snapshot inspect backup.snap -o json`,
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			hdr, _, err := readSnapshotFile(args[0])
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, hdr)
			}
			a.printSnapshotHeader(args[0], hdr)
			return nil
		}),
	}
}

func (a *app) printSnapshotHeader(name string, hdr *edgelbv1.SnapshotHeader) {
	created := "-"
	if hdr.GetCreateTime() != nil {
		created = hdr.GetCreateTime().AsTime().Local().Format(time.RFC3339)
	}
	fmt.Fprintf(a.stdout, "%s: checksum ok\n", name)
	tw := output.TableWriter(a.stdout)
	output.Row(tw, "  saved from member", hdr.GetMemberId())
	output.Row(tw, "  at revision", u64(hdr.GetRevision()))
	if hdr.GetStale() {
		output.Row(tw, "  stale", "YES: "+hdr.GetStaleReason())
	} else {
		output.Row(tw, "  stale", "no")
	}
	output.Row(tw, "  created", created)
	output.Row(tw, "  server version", orDash(hdr.GetServerVersion()))
	output.Row(tw, "  virtual services", u64(uint64(hdr.GetVirtualServices())))
	output.Row(tw, "  address pools", u64(uint64(hdr.GetAddressPools())))
	output.Row(tw, "  members", u64(uint64(hdr.GetMembers())))
	output.Row(tw, "  size", fmt.Sprintf("%d bytes, sha256 %x", hdr.GetSize(), hdr.GetSha256()))
	tw.Flush()
}

func checkSnapshot(hdr *edgelbv1.SnapshotHeader, data []byte) error {
	if uint64(len(data)) != hdr.GetSize() {
		return fmt.Errorf("%d bytes of data, the header says %d (truncated?)", len(data), hdr.GetSize())
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], hdr.GetSha256()) {
		return fmt.Errorf("SHA-256 %x does not match the header's %x", sum, hdr.GetSha256())
	}
	return nil
}

// writeSnapshotFile writes the file next to its final name and renames it,
// so a failed save never leaves a half-written backup under the right name.
func writeSnapshotFile(path string, hdr *edgelbv1.SnapshotHeader, data []byte, stdout io.Writer) error {
	h, err := proto.Marshal(hdr)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.WriteString(snapshotMagic)
	buf.Write(binary.AppendUvarint(nil, uint64(len(h))))
	buf.Write(h)
	buf.Write(data)
	if path == "-" {
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func readSnapshotFile(path string) (*edgelbv1.SnapshotHeader, []byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		r = f
	}
	br := bufio.NewReader(r)
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, nil, fmt.Errorf("%s is not an edgelb snapshot (made by lbctl snapshot save)", path)
	}
	n, err := binary.ReadUvarint(br)
	if err != nil || n > maxSnapshotHeader {
		return nil, nil, fmt.Errorf("%s: damaged snapshot header", path)
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(br, h); err != nil {
		return nil, nil, fmt.Errorf("%s: truncated snapshot header", path)
	}
	var hdr edgelbv1.SnapshotHeader
	if err := proto.Unmarshal(h, &hdr); err != nil {
		return nil, nil, fmt.Errorf("%s: damaged snapshot header: %w", path, err)
	}
	data, err := io.ReadAll(br)
	if err != nil {
		return nil, nil, err
	}
	if err := checkSnapshot(&hdr, data); err != nil {
		return nil, nil, fmt.Errorf("%s is damaged: %w", path, err)
	}
	return &hdr, data, nil
}
