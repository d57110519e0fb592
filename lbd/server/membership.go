package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/node"
)

// DefaultCatchUpTimeout is how long a new member may take to catch up before
// it is removed again (Options.CatchUpTimeout).
const DefaultCatchUpTimeout = 30 * time.Second

// probeTimeout bounds one check of a new member's ports and identity.
const probeTimeout = 3 * time.Second

// errLeaderMoved tells onLeader that the local part handed leadership over
// and the new leader is to finish the call.
var errLeaderMoved = errors.New("leadership handed over")

// lockMembership serialises membership changes on this leader.
func (s *Server) lockMembership(ctx context.Context) (release func(), err error) {
	select {
	case s.membership <- struct{}{}:
		return func() { <-s.membership }, nil
	case <-ctx.Done():
		return nil, status.Error(codes.Unavailable, "another membership change is still in progress on the leader; try again")
	}
}

// EnsureClusterID gives the cluster its id if it has none yet. The leader
// calls it on taking office; the FSM keeps the first id committed.
func (s *Server) EnsureClusterID(ctx context.Context) error {
	if s.fsm.ClusterID() != "" {
		return nil
	}
	// A member whose state came from a snapshot written by an lbd without
	// cluster ids has none while the others do: adopt theirs, or the
	// members would disagree on who they are.
	id := s.peersClusterID(ctx)
	if id == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("generate cluster id: %w", err)
		}
		id = hex.EncodeToString(b)
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetClusterId{SetClusterId: &raftv1.SetClusterID{ClusterId: id}}}); err != nil {
		return fmt.Errorf("set cluster id: %w", err)
	}
	s.log.Info("cluster id set", "cluster_id", s.fsm.ClusterID())
	return nil
}

// peersClusterID is the cluster id another member reports, "" if none does.
func (s *Server) peersClusterID(ctx context.Context) string {
	for _, m := range s.fsm.Members() {
		if m.Id == s.opts.Self.Id || m.ApiAddress == "" {
			continue
		}
		conn, err := s.peer(m.ApiAddress)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, probeTimeout)
		resp, err := edgelbv1.NewClusterServiceClient(conn).GetMemberStatus(cctx, &edgelbv1.GetMemberStatusRequest{Id: m.Id})
		cancel()
		if err == nil && resp.GetStatus().GetClusterId() != "" {
			return resp.GetStatus().GetClusterId()
		}
	}
	return ""
}

// AddMember adds a member safely: its addresses are checked and it is asked
// who it is before anything is committed; it joins as a non-voter and is
// promoted to voter only once it has caught up, or removed again if it does
// not within the catch-up timeout. Adding a member that is already a voter at
// the same addresses changes nothing, so a joining lbd may retry.
func (s *Server) AddMember(ctx context.Context, req *edgelbv1.AddMemberRequest) (*edgelbv1.AddMemberResponse, error) {
	var m *edgelbv1.Member
	if req.Member != nil {
		m = proto.Clone(req.Member).(*edgelbv1.Member)
	}
	if err := validate.Member(m); err != nil {
		return nil, err
	}
	m.Suffrage = ""
	m.State = edgelbv1.MemberState_MEMBER_STATE_ACTIVE
	return onLeader(ctx, s, func(ctx context.Context) (*edgelbv1.AddMemberResponse, error) {
		return s.addMember(ctx, m, req.Nonvoter)
	}, func(ctx context.Context, c edgelbv1.ClusterServiceClient) (*edgelbv1.AddMemberResponse, error) {
		return c.AddMember(ctx, req)
	})
}

func (s *Server) addMember(ctx context.Context, m *edgelbv1.Member, nonvoter bool) (*edgelbv1.AddMemberResponse, error) {
	release, err := s.lockMembership(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	clusterID := s.fsm.ClusterID()
	if clusterID == "" {
		return nil, errinfo.Errorf(codes.Unavailable, errinfo.ClusterIDUnknown, nil,
			"the leader has not recorded the cluster's id yet (it does so right after taking office); try again in a moment")
	}
	servers, err := s.node.Servers()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
	}
	raftAddrs, err := s.checkAddresses(ctx, m, servers)
	if err != nil {
		return nil, err
	}
	var existing *node.Server
	for i := range servers {
		if servers[i].ID == m.Id {
			existing = &servers[i]
		}
	}
	if err := s.probeMember(ctx, m, raftAddrs, clusterID, existing != nil); err != nil {
		return nil, err
	}
	// checkAddresses found its known addresses to be these under any
	// spelling; keep the spelling raft and the table already use.
	if existing != nil {
		m.RaftAddress = existing.Address
	}
	if cur, ok := s.fsm.Member(m.Id); ok && cur.ApiAddress != "" {
		m.ApiAddress = cur.ApiAddress
	}
	if existing != nil && (existing.Voter || nonvoter) {
		// Already there with these addresses (a join's retry): make sure it
		// is registered, change nothing else.
		return s.registerMember(ctx, m, "already a member")
	}

	if existing == nil {
		if err := s.node.AddVoter(ctx, m.Id, m.RaftAddress, true); err != nil {
			return nil, status.Errorf(codes.Unavailable, "add %s (%s) to raft as a non-voter: %v", m.Id, m.RaftAddress, err)
		}
		s.log.Info("member added as a non-voter; waiting for it to catch up", "id", m.Id, "raft_addr", m.RaftAddress,
			"api_addr", m.ApiAddress, "timeout", s.opts.CatchUpTimeout)
	}
	// From here on the change is finished (promoted or removed again) even
	// if the caller gives up, so no half-added member is left behind.
	bg := context.WithoutCancel(ctx)
	if err := s.waitCaughtUp(bg, m, clusterID); err != nil {
		if !s.node.IsLeader() {
			// Only a leader may change the configuration; the non-voter
			// costs no quorum, and a retry on the new leader finishes it.
			return nil, status.Errorf(codes.Unavailable, "this member stopped leading while %s was catching up (%v); it may remain a non-voter: add it again to finish, or remove it", m.Id, err)
		}
		s.log.Warn("new member did not catch up; removing it again", "id", m.Id, "raft_addr", m.RaftAddress, "err", err)
		rctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if rerr := s.node.RemoveServer(rctx, m.Id); rerr != nil {
			s.log.Error("remove a member that did not catch up", "id", m.Id, "err", rerr)
			return nil, status.Errorf(codes.Internal, "member %s did not catch up (%v), and removing it again failed: %v; remove it with lbctl member remove %s",
				m.Id, err, rerr, m.Id)
		}
		return nil, errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberCatchUpTimeout, map[string]string{"member": m.Id},
			"member %s did not catch up with the leader within %s (%v); it was removed again and nothing else changed. "+
				"Check that the leader reaches its raft address %s (firewall, lbd --raft-addr) and read its log, then add it again",
			m.Id, s.opts.CatchUpTimeout, err, m.RaftAddress)
	}
	if !nonvoter {
		pctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if err := s.quorumAfter(m.Id, +1); err != nil {
			if rerr := s.node.RemoveServer(pctx, m.Id); rerr != nil {
				s.log.Error("remove a non-voter that could not be promoted", "id", m.Id, "err", rerr)
			}
			return nil, err
		}
		if err := s.node.AddVoter(pctx, m.Id, m.RaftAddress, false); err != nil {
			return nil, status.Errorf(codes.Unavailable, "promote %s to voter: %v; it is a caught-up non-voter now: add it again to retry, or remove it", m.Id, err)
		}
		ctx = pctx
	}
	return s.registerMember(ctx, m, "member added")
}

// registerMember puts m into the member table unless it is there already.
func (s *Server) registerMember(ctx context.Context, m *edgelbv1.Member, what string) (*edgelbv1.AddMemberResponse, error) {
	if cur, ok := s.fsm.Member(m.Id); ok && cur.RaftAddress == m.RaftAddress && cur.ApiAddress == m.ApiAddress &&
		(m.DataInterface == "" || cur.DataInterface == m.DataInterface) {
		return &edgelbv1.AddMemberResponse{Member: cur}, nil
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: m}}})
	if err != nil {
		return nil, err
	}
	s.log.Info(what, "id", m.Id, "raft_addr", m.RaftAddress, "api_addr", m.ApiAddress)
	s.warnHostConflicts(m.Id)
	return &edgelbv1.AddMemberResponse{Member: res.Member}, nil
}

// resolve turns host:port into the IP:port pairs it names.
func resolve(ctx context.Context, hostport string) ([]netip.AddrPort, error) {
	host, portS, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portS, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", portS, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), uint16(port))}, nil
	}
	rctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	return out, nil
}

func overlap(a, b []netip.AddrPort) (netip.AddrPort, bool) {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x, true
			}
		}
	}
	return netip.AddrPort{}, false
}

// checkAddresses refuses wildcard and unresolvable addresses, and addresses
// that another member already uses under any spelling (a host name, an IPv4
// address mapped into IPv6): raft would otherwise count one host twice. It
// returns the resolved raft addresses.
func (s *Server) checkAddresses(ctx context.Context, m *edgelbv1.Member, servers []node.Server) ([]netip.AddrPort, error) {
	var raftAddrs, apiAddrs []netip.AddrPort
	fields := []struct {
		field, addr string
		out         *[]netip.AddrPort
		port        string
	}{
		{"member.raft_address", m.RaftAddress, &raftAddrs, "raft"},
		{"member.api_address", m.ApiAddress, &apiAddrs, "API"},
	}
	for _, f := range fields {
		addrs, err := resolve(ctx, f.addr)
		if err != nil {
			return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.MemberAddressUnresolvable, map[string]string{"field": f.field, "address": f.addr},
				"%s: cannot resolve %s (%v); give an IP address, or a name the leader resolves", f.field, f.addr, err)
		}
		for _, a := range addrs {
			if a.Addr().IsUnspecified() {
				return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.MemberAddressWildcard, map[string]string{"field": f.field, "address": f.addr},
					"%s: %s is a wildcard (listen on every address), which other members cannot dial; give the %s address of %s that the other members reach, e.g. 10.1.0.4:%s",
					f.field, f.addr, f.port, m.Id, strconv.Itoa(int(a.Port())))
			}
		}
		*f.out = addrs
	}
	if a, same := overlap(raftAddrs, apiAddrs); same {
		return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.MemberAddressInUse, map[string]string{"address": a.String()},
			"member.raft_address %s and member.api_address %s are both %s; raft and the API listen on different ports", m.RaftAddress, m.ApiAddress, a)
	}

	// Every address each other member is known by: raft's configuration and the member table.
	known := map[string][]string{}
	for _, sv := range servers {
		known[sv.ID] = append(known[sv.ID], sv.Address)
	}
	for _, o := range s.fsm.Members() {
		known[o.Id] = append(known[o.Id], o.RaftAddress, o.ApiAddress)
	}
	mine := append(append([]netip.AddrPort{}, raftAddrs...), apiAddrs...)
	for id, addrs := range known {
		for _, addr := range addrs {
			if addr == "" {
				continue
			}
			if id == m.Id {
				continue // its own addresses (a retry): checked below
			}
			theirs, err := resolve(ctx, addr)
			if err != nil {
				// It cannot be resolved now: compare the spelling at least.
				if addr != m.RaftAddress && addr != m.ApiAddress {
					continue
				}
				return nil, errinfo.Errorf(codes.AlreadyExists, errinfo.MemberAddressInUse, map[string]string{"member": id, "address": addr},
					"member %s already uses %s; give the new member's own addresses, or remove %s first (lbctl member remove %s)", id, addr, id, id)
			}
			a, same := overlap(mine, theirs)
			if !same {
				continue
			}
			as := ""
			if addr != a.String() {
				as = " (as " + addr + ")"
			}
			return nil, errinfo.Errorf(codes.AlreadyExists, errinfo.MemberAddressInUse, map[string]string{"member": id, "address": a.String()},
				"member %s already uses %s%s; %s would be the same host and port under another spelling. Give the new member's own addresses, or remove %s first (lbctl member remove %s)",
				id, a, as, addrOf(m, a, raftAddrs), id, id)
		}
	}
	// The same id at other addresses is another host, or a host that moved:
	// raft must not silently re-point it.
	for _, sv := range servers {
		if sv.ID != m.Id {
			continue
		}
		theirs, err := resolve(ctx, sv.Address)
		if _, same := overlap(raftAddrs, theirs); err != nil || !same {
			return nil, errinfo.Errorf(codes.AlreadyExists, errinfo.MemberIDInUse, map[string]string{"member": m.Id},
				"member %s already exists with raft address %s; to give it other addresses remove it first (lbctl member remove %s), then add it again",
				m.Id, sv.Address, m.Id)
		}
	}
	if cur, ok := s.fsm.Member(m.Id); ok && cur.ApiAddress != "" {
		theirs, err := resolve(ctx, cur.ApiAddress)
		if _, same := overlap(apiAddrs, theirs); err != nil || !same {
			return nil, errinfo.Errorf(codes.AlreadyExists, errinfo.MemberIDInUse, map[string]string{"member": m.Id},
				"member %s already exists with API address %s; to give it other addresses remove it first (lbctl member remove %s), then add it again",
				m.Id, cur.ApiAddress, m.Id)
		}
	}
	return raftAddrs, nil
}

// addrOf names which of m's addresses a is.
func addrOf(m *edgelbv1.Member, a netip.AddrPort, raftAddrs []netip.AddrPort) string {
	for _, r := range raftAddrs {
		if r == a {
			return "raft address " + m.RaftAddress
		}
	}
	return "API address " + m.ApiAddress
}

// probeMember checks, before anything is committed, that the new member
// listens on both ports and is an lbd with the expected id that belongs to
// no other cluster. inConfig is true when raft already lists it (a retry).
func (s *Server) probeMember(ctx context.Context, m *edgelbv1.Member, raftAddrs []netip.AddrPort, clusterID string, inConfig bool) error {
	for _, p := range []struct{ what, addr string }{{"raft", m.RaftAddress}, {"API", m.ApiAddress}} {
		dctx, cancel := context.WithTimeout(ctx, probeTimeout)
		conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", p.addr)
		cancel()
		if err != nil {
			return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberUnreachable, map[string]string{"member": m.Id, "address": p.addr},
				"nothing answers at %s's %s address %s (%v); start lbd there first (lbd --id %s --api-addr %s --raft-addr %s --join <a member's API address>) and check firewalls; nothing was changed",
				m.Id, p.what, p.addr, err, m.Id, m.ApiAddress, m.RaftAddress)
		}
		conn.Close()
	}
	st, err := s.fetchStatus(ctx, m.ApiAddress)
	if err != nil {
		return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberUnreachable, map[string]string{"member": m.Id, "address": m.ApiAddress},
			"the API address %s of %s does not answer as lbd (%s); check --api-addr and that lbd runs there with this cluster's CA; nothing was changed",
			m.ApiAddress, m.Id, status.Convert(err).Message())
	}
	if got := st.GetMember().GetId(); got != m.Id {
		return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberIdentityMismatch, map[string]string{"member": m.Id, "answered_as": got},
			"the lbd at %s is member %q, not %q; check the address, or start lbd there with --id %s; nothing was changed", m.ApiAddress, got, m.Id, m.Id)
	}
	if own := st.GetMember().GetRaftAddress(); own != "" {
		theirs, err := resolve(ctx, own)
		if _, same := overlap(raftAddrs, theirs); err == nil && !same {
			return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberIdentityMismatch, map[string]string{"member": m.Id, "raft_address": own},
				"lbd %s listens for raft at %s, not at %s; give --raft-addr %s; nothing was changed", m.Id, own, m.RaftAddress, own)
		}
	}
	switch theirs := st.GetClusterId(); {
	case theirs != "" && theirs != clusterID:
		return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberOfOtherCluster, map[string]string{"member": m.Id, "cluster_id": theirs},
			"lbd %s belongs to another cluster (id %s; this one is %s): it was started without --join and bootstrapped its own, or it is a member elsewhere. "+
				"Stop it, move its data directory aside, and start it again with --join; nothing was changed", m.Id, theirs, clusterID)
	case theirs == "" && !inConfig && (st.GetLastLogIndex() > 0 || st.GetLeaderId() != ""):
		return errinfo.Errorf(codes.FailedPrecondition, errinfo.MemberOfOtherCluster, map[string]string{"member": m.Id},
			"lbd %s holds raft state of another cluster (last log index %d, leader %q); stop it, move its data directory aside and start it again with --join; nothing was changed",
			m.Id, st.GetLastLogIndex(), st.GetLeaderId())
	}
	return nil
}

// fetchStatus asks the lbd at addr for its own status over a connection of
// its own: the address may be wrong, and a bad one must not stay cached.
func (s *Server) fetchStatus(ctx context.Context, addr string) (*edgelbv1.MemberStatus, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(s.opts.PeerCreds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	resp, err := edgelbv1.NewClusterServiceClient(conn).GetMemberStatus(cctx, &edgelbv1.GetMemberStatusRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}

// waitCaughtUp waits until the new member has applied everything this
// leader's FSM held when it was added, follows this leader and knows the
// cluster's id, bounded by the catch-up timeout.
func (s *Server) waitCaughtUp(ctx context.Context, m *edgelbv1.Member, clusterID string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.CatchUpTimeout)
	defer cancel()
	target := s.fsm.Revision()
	last := "it did not answer"
	for s.node.IsLeader() {
		st, err := s.fetchStatus(ctx, m.ApiAddress)
		switch {
		case err != nil:
			last = "its API does not answer: " + status.Convert(err).Message()
		case st.GetLeaderId() != s.opts.Self.Id:
			last = fmt.Sprintf("it has not heard from this leader (it names leader %q)", st.GetLeaderId())
		case st.GetRevision() < target || st.GetClusterId() != clusterID:
			last = fmt.Sprintf("it is at revision %d of %d", st.GetRevision(), target)
		default:
			s.log.Info("new member caught up", "id", m.Id, "revision", st.GetRevision())
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New(last)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("leadership lost")
}

// quorumAfter refuses a change of the voters (delta +1 adds id, -1 removes
// it) after which fewer voters would answer the leader than a quorum needs:
// the cluster would stop taking writes and electing leaders.
func (s *Server) quorumAfter(id string, delta int) error {
	servers, err := s.node.Servers()
	if err != nil {
		return status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
	}
	silent := s.node.PeerSilence()
	voters, answering := 0, 0
	var down []string
	for _, sv := range servers {
		if !sv.Voter {
			continue
		}
		voters++
		if _, quiet := silent[sv.ID]; quiet && sv.ID != s.opts.Self.Id {
			down = append(down, sv.ID)
			if delta < 0 && sv.ID == id {
				answering++ // removing a silent voter takes nothing from those answering
			}
			continue
		}
		answering++
	}
	after, answeringAfter := voters+delta, answering+delta
	if after <= 0 || answeringAfter >= after/2+1 {
		return nil
	}
	verb := "adding"
	if delta < 0 {
		verb = "removing"
	}
	return errinfo.Errorf(codes.FailedPrecondition, errinfo.QuorumAtRisk, map[string]string{"member": id, "down": strings.Join(down, ",")},
		"%s %s would leave %d of %d voters answering, fewer than the %d a quorum needs (not answering: %s); bring those members back or remove them first; nothing was changed",
		verb, id, answeringAfter, after, after/2+1, strings.Join(down, ", "))
}

// RemoveMember takes a member out of the member table (its VIPs move) and
// then out of raft's configuration. Removing the leader hands leadership to
// another voter first, which then removes it.
func (s *Server) RemoveMember(ctx context.Context, req *edgelbv1.RemoveMemberRequest) (*edgelbv1.RemoveMemberResponse, error) {
	if err := validate.RefName("id", req.Id, 63); err != nil {
		return nil, err
	}
	return onLeader(ctx, s, func(ctx context.Context) (*edgelbv1.RemoveMemberResponse, error) {
		release, err := s.lockMembership(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
		servers, err := s.node.Servers()
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
		}
		inRaft, voter, voters := false, false, 0
		for _, sv := range servers {
			if sv.Voter {
				voters++
			}
			if sv.ID == req.Id {
				inRaft, voter = true, sv.Voter
			}
		}
		_, inTable := s.fsm.Member(req.Id)
		if !inRaft && !inTable {
			return nil, status.Errorf(codes.NotFound, "member %s not found (lbctl member list)", req.Id)
		}
		if voter && voters == 1 {
			return nil, errinfo.Errorf(codes.FailedPrecondition, errinfo.LastVoter, map[string]string{"member": req.Id},
				"member %s is the cluster's only voter; a cluster cannot remove its last voter", req.Id)
		}
		if voter {
			if err := s.quorumAfter(req.Id, -1); err != nil {
				return nil, err
			}
		}
		if req.Id == s.opts.Self.Id {
			// A leader that removes itself stops leading mid-change; hand
			// leadership over first and let the new leader do the removal.
			if err := s.handOver(ctx); err != nil {
				return nil, err
			}
			return nil, errLeaderMoved
		}
		// Table first: its VIPs lose their owner and are reassigned while the
		// member can still be told.
		if inTable {
			if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RemoveMember{RemoveMember: &raftv1.RemoveMember{Id: req.Id}}}); err != nil {
				return nil, err
			}
		}
		if inRaft {
			if err := s.node.RemoveServer(ctx, req.Id); err != nil {
				return nil, status.Errorf(codes.Unavailable, "remove %s from raft: %v", req.Id, err)
			}
		}
		s.log.Info("member removed", "id", req.Id)
		return &edgelbv1.RemoveMemberResponse{}, nil
	}, func(ctx context.Context, c edgelbv1.ClusterServiceClient) (*edgelbv1.RemoveMemberResponse, error) {
		return c.RemoveMember(ctx, req)
	})
}

// handOver transfers leadership to the most up-to-date voter and waits until
// this member has seen another leader.
func (s *Server) handOver(ctx context.Context) error {
	s.log.Info("handing leadership over before removing this member")
	if err := s.node.TransferLeadership(""); err != nil {
		return errinfo.Errorf(codes.FailedPrecondition, errinfo.LeadershipTransferFailed, map[string]string{"member": s.opts.Self.Id},
			"member %s leads; handing leadership to another voter before removing it failed (%v); nothing was changed: try again, or lbctl leader transfer first",
			s.opts.Self.Id, err)
	}
	for {
		if id, _ := s.node.Leader(); id != "" && id != s.opts.Self.Id {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.Error(codes.Unavailable, "leadership was handed over but no new leader was seen in time; the member was not removed: try again")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
