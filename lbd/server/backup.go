package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/auth"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// SnapshotFormatVersion is the version of SnapshotHeader and its chunking.
const SnapshotFormatVersion = 1

// snapshotChunk is the data carried by one stream message: well under the
// 4 MiB message limit on both sides.
const snapshotChunk = 1 << 20

// maxRestoreSize bounds a restore upload held in memory. The biggest state
// measured (10,000 services × 50 backends) serialises to well under this.
const maxRestoreSize = 1 << 30

// SaveSnapshot streams this member's replicated state at one revision. Like
// every read it passes the read gate (gate.go): a member without a leader
// refuses, since its replica may be empty or old, unless the caller asks for
// a stale copy; the header then says it is stale and why.
func (s *Server) SaveSnapshot(req *edgelbv1.SaveSnapshotRequest, stream edgelbv1.ClusterService_SaveSnapshotServer) error {
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return status.Errorf(codes.Internal, "snapshot the state: %v", err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		return status.Errorf(codes.Internal, "serialise the state: %v", err)
	}
	data := sink.Bytes()
	var msg raftv1.Snapshot
	if err := proto.Unmarshal(data, &msg); err != nil {
		return status.Errorf(codes.Internal, "re-read the serialised state: %v", err)
	}
	sum := sha256.Sum256(data)
	hdr := &edgelbv1.SnapshotHeader{
		FormatVersion:   SnapshotFormatVersion,
		MemberId:        s.opts.Self.Id,
		Revision:        msg.Revision,
		SnapshotVersion: msg.Version,
		CreateTime:      timestamppb.Now(),
		Size:            uint64(len(data)),
		Sha256:          sum[:],
		VirtualServices: uint32(len(msg.VirtualServices)),
		AddressPools:    uint32(len(msg.AddressPools)),
		Members:         uint32(len(msg.Members)),
		ServerVersion:   s.opts.Version,
	}
	if r := StaleReason(stream.Context()); r != "" {
		hdr.Stale, hdr.StaleReason = true, r
	}
	first := true
	for first || len(data) > 0 {
		n := min(len(data), snapshotChunk)
		resp := &edgelbv1.SaveSnapshotResponse{Data: data[:n]}
		if first {
			resp.Header = hdr
			first = false
		}
		if err := stream.Send(resp); err != nil {
			return status.Errorf(codes.Unavailable, "send snapshot: %v", err)
		}
		data = data[n:]
	}
	s.log.Info("snapshot saved", "revision", hdr.Revision, "bytes", hdr.Size, "services", hdr.VirtualServices, "stale", hdr.Stale, "by", identityOf(stream.Context()))
	return nil
}

// RestoreSnapshot replaces the cluster's services and pools with the
// uploaded snapshot's, as one RestoreState command through raft. The upload
// is checked here (size, SHA-256, decodable, version) before anything is
// proposed; the FSM checks the content and refuses it whole if any part is bad.
// On a follower the whole call is forwarded to the leader, which proposes
// locally: the command can be far larger than a forwarded write may be.
func (s *Server) RestoreSnapshot(stream edgelbv1.ClusterService_RestoreSnapshotServer) error {
	hdr, data, err := receiveSnapshot(stream)
	if err != nil {
		return err
	}
	var msg raftv1.Snapshot
	if err := proto.Unmarshal(data, &msg); err != nil {
		return status.Errorf(codes.InvalidArgument, "the snapshot does not decode as edgelb.raft.v1.Snapshot: %v", err)
	}
	by := identityOf(stream.Context())
	ctx := stream.Context()
	resp, err := onLeader(ctx, s, func(ctx context.Context) (*edgelbv1.RestoreSnapshotResponse, error) {
		out := &edgelbv1.RestoreSnapshotResponse{
			VirtualServices: uint32(len(msg.VirtualServices)),
			AddressPools:    uint32(len(msg.AddressPools)),
		}
		keep := map[[2]string]bool{}
		for _, vs := range msg.VirtualServices {
			keep[[2]string{vs.GetTenant(), vs.GetName()}] = true
		}
		vss, _ := s.fsm.Shared(fsm.Filter{})
		for _, vs := range vss {
			if !keep[[2]string{vs.Tenant, vs.Name}] {
				out.RemovedVirtualServices++
			}
		}
		pools := map[string]bool{}
		for _, p := range msg.AddressPools {
			pools[p.GetName()] = true
		}
		for _, p := range s.fsm.Pools() {
			if !pools[p.Name] {
				out.RemovedAddressPools++
			}
		}
		res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RestoreState{RestoreState: &raftv1.RestoreState{Snapshot: &msg, RequestedBy: by}}})
		if err != nil {
			return nil, err
		}
		out.Revision = res.Revision
		return out, nil
	}, func(ctx context.Context, c edgelbv1.ClusterServiceClient) (*edgelbv1.RestoreSnapshotResponse, error) {
		fwd, err := c.RestoreSnapshot(ctx)
		if err != nil {
			return nil, err
		}
		if err := sendSnapshot(fwd.Send, hdr, data); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := fwd.CloseAndRecv()
		if err == nil {
			// Like a forwarded write: answer once this replica has it too.
			s.waitApplied(ctx, resp.Revision)
		}
		return resp, err
	})
	if err != nil {
		return err
	}
	s.log.Warn("state restored from a snapshot", "snapshot_member", hdr.MemberId, "snapshot_revision", hdr.Revision, "snapshot_stale", hdr.Stale,
		"revision", resp.Revision, "services", resp.VirtualServices, "removed_services", resp.RemovedVirtualServices, "by", by)
	return stream.SendAndClose(resp)
}

// receiveSnapshot reads a header and the data after it, and checks them.
func receiveSnapshot(stream edgelbv1.ClusterService_RestoreSnapshotServer) (*edgelbv1.SnapshotHeader, []byte, error) {
	var hdr *edgelbv1.SnapshotHeader
	var buf bytes.Buffer
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if hdr == nil {
			if req.Header == nil {
				return nil, nil, status.Error(codes.InvalidArgument, "the first message must carry the snapshot header")
			}
			hdr = req.Header
			if hdr.FormatVersion > SnapshotFormatVersion {
				return nil, nil, status.Errorf(codes.FailedPrecondition, "snapshot format %d is newer than this member understands (%d); upgrade lbd first", hdr.FormatVersion, SnapshotFormatVersion)
			}
			if hdr.Size > maxRestoreSize {
				return nil, nil, status.Errorf(codes.InvalidArgument, "snapshot of %d bytes exceeds the limit of %d", hdr.Size, maxRestoreSize)
			}
			buf.Grow(int(hdr.Size))
		} else if req.Header != nil {
			return nil, nil, status.Error(codes.InvalidArgument, "only the first message may carry a header")
		}
		if uint64(buf.Len()+len(req.Data)) > hdr.Size {
			return nil, nil, status.Errorf(codes.InvalidArgument, "more data than the %d bytes the header announces", hdr.Size)
		}
		buf.Write(req.Data)
	}
	if hdr == nil {
		return nil, nil, status.Error(codes.InvalidArgument, "empty upload: no snapshot header")
	}
	data := buf.Bytes()
	if uint64(len(data)) != hdr.Size {
		return nil, nil, status.Errorf(codes.InvalidArgument, "truncated snapshot: %d of %d bytes", len(data), hdr.Size)
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], hdr.Sha256) {
		return nil, nil, status.Errorf(codes.DataLoss, "snapshot checksum mismatch: the data is not what was saved (SHA-256 %x, header says %x)", sum, hdr.Sha256)
	}
	return hdr, data, nil
}

// sendSnapshot writes hdr and data as restore messages.
func sendSnapshot(send func(*edgelbv1.RestoreSnapshotRequest) error, hdr *edgelbv1.SnapshotHeader, data []byte) error {
	first := true
	for first || len(data) > 0 {
		n := min(len(data), snapshotChunk)
		req := &edgelbv1.RestoreSnapshotRequest{Data: data[:n]}
		if first {
			req.Header = hdr
			first = false
		}
		if err := send(req); err != nil {
			return err // io.EOF: the peer answered early; CloseAndRecv has its status
		}
		data = data[n:]
	}
	return nil
}

func identityOf(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok {
		return id.String()
	}
	return "unknown"
}

// memSink collects a raft snapshot in memory.
type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "backup" }
func (*memSink) Close() error  { return nil }
func (*memSink) Cancel() error { return nil }
