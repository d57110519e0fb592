package cli

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbctl/client"
	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// clusterStatus is `lbctl status -o json|yaml`. Field names are stable.
type clusterStatus struct {
	// Health is "healthy", "degraded" (serving, but something needs a look) or
	// "unavailable" (no raft leader: no writes, no failover).
	Health   string         `json:"health"`
	Problems []string       `json:"problems"`
	Leader   string         `json:"leader"`
	Term     uint64         `json:"term"`
	Revision uint64         `json:"revision"`
	Members  []memberHealth `json:"members"`
	Services int            `json:"services"`
	VIPs     int            `json:"vips"`
	// VIPs that need attention: no owner, an owner that is not serving, or
	// backends reported UNHEALTHY by the owner's health checks.
	VIPProblems []vipHealth `json:"vipProblems"`
	// RecentMoves are the latest ownership changes still in the replicated
	// event history, newest first: failovers ("owner unreachable", "owner
	// left the cluster") and planned moves ("owner draining", "moved by
	// operator", "pinned to member").
	RecentMoves []ownerMove `json:"recentMoves"`
	// OrphanedTenants are tenants whose cloud provider has been silent past
	// --silent-threshold while they have virtual services: VIPs that most
	// likely outlived their cluster.
	OrphanedTenants []orphanedTenant `json:"orphanedTenants"`
	// GoneServices are, per tenant whose cloud provider is not silent, the
	// virtual services it reported orphaned: their Kubernetes Service no
	// longer exists and it has not deleted them (yet).
	GoneServices []goneServices `json:"goneServices"`
	// Orphaned counts the virtual services of both.
	Orphaned int `json:"orphaned"`
}

type goneServices struct {
	Tenant   string   `json:"tenant"`
	Services []string `json:"services"`
}

type orphanedTenant struct {
	Tenant          string    `json:"tenant"`
	LastSeen        time.Time `json:"lastSeen"`
	SilentSeconds   int64     `json:"silentSeconds"`
	VirtualServices int       `json:"virtualServices"`
}

type ownerMove struct {
	Time     time.Time `json:"time"`
	Revision uint64    `json:"revision"`
	VIP      string    `json:"vip"`
	Services []string  `json:"services"`
	Owner    string    `json:"owner"`
	Reason   string    `json:"reason"`
	// Unplanned is true for failovers, false for moves an operator asked for.
	Unplanned bool `json:"unplanned"`
}

// moveReasons are the ownership reasons of a VIP that changes hands (not a
// new VIP being placed), with how status shows each; unplanned marks
// failovers. Events before the enum existed have none and are not listed.
var moveReasons = map[edgelbv1.OwnershipReason]struct {
	text      string
	unplanned bool
}{
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE: {"owner unreachable", true},
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_LEFT:        {"owner left the cluster", true},
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_DRAINING:    {"owner draining", false},
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_MOVED:             {"moved by operator", false},
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_STOPPING:    {"owner stopping", false},
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED:            {"pinned to member", false},
}

// maxMoves shown by status, and how far back in the event history it looks.
const (
	maxMoves        = 10
	moveHistoryBack = 4000
)

type memberHealth struct {
	ID        string `json:"id"`
	Role      string `json:"role"`  // leader, follower, candidate, ... or "unknown" when unreachable
	State     string `json:"state"` // active, draining, left
	Suffrage  string `json:"suffrage"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// AssignedVIPs are the VIPs the replicated state gives it; ServingVIPs
	// those its data plane currently programs (fewer while fenced or failing).
	AssignedVIPs int    `json:"assignedVips"`
	ServingVIPs  int    `json:"servingVips"`
	Applied      uint64 `json:"appliedIndex"`
	// Lag is the leader's commit index minus this member's applied index.
	Lag uint64 `json:"lag"`
	// Ready is what the member's /readyz says; NotReady is why not.
	Ready    bool   `json:"ready"`
	NotReady string `json:"notReady,omitempty"`
	Version  string `json:"version,omitempty"`
	// BGPPeers and BGPPeersDown count the member's BGP peers and those whose
	// session is not established (0 and 0 without BGP, or when the caller
	// may not read BGP status: operators and admins can).
	BGPPeers     int `json:"bgpPeers,omitempty"`
	BGPPeersDown int `json:"bgpPeersDown,omitempty"`
}

// maxHealthyLag is how many raft entries a member may trail the leader's
// commit index and still count as caught up. Statuses are read one after
// the other, so a member replicating a busy write stream trails by a few.
const maxHealthyLag = 32

type vipHealth struct {
	VIP               string   `json:"vip"`
	Services          []string `json:"services"`
	Owner             string   `json:"owner"`
	Problem           string   `json:"problem"`
	UnhealthyBackends []string `json:"unhealthyBackends,omitempty"`
	Backends          int      `json:"backends"`
}

func (a *app) statusCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Short: "One screen: is the edge cluster healthy?",
		Long: `Show the cluster's health on one screen: the raft leader and term, every
member with its raft role, whether it answers, how many VIPs it is assigned and
how many it actually serves, how far behind the leader it is; then every VIP
that needs attention: without an owner, owned by a member that is unreachable,
draining or not serving it, or with backends the owner's health checks report
UNHEALTHY; last, the most recent ownership moves (failovers and planned
moves) with their time and reason; and the tenants whose cloud provider has
been silent for --silent-threshold or longer while they have VIPs (orphaned:
their cluster is probably gone; lbctl tenant gc removes them), and the
services a live cloud provider reported orphaned because their Kubernetes
Service no longer exists (ORPHANS counts both; lbctl vip list --orphaned
lists them).

Health is "healthy" only when every member answers, is ready (what its
/readyz says: a leader known, registered, caught up) and trails the leader's
commit index by at most 32 raft entries, and no member warns (an address
pool that holds its own address or gateway); "degraded" (traffic flows,
something needs a look: the problems name the member and, for one that lags,
by how much); or "unavailable" (no raft leader: no writes and no failover
until a majority of members is back). Wait for HEALTHY before restarting the
next member in a rolling upgrade. The exit code is 0 whenever the cluster
answered; scripts read .health from -o json.

Without --tenant every tenant the caller may see is included.`,
		Example: `  lbctl status
  lbctl status -o json | jq -r .health
  lbctl --endpoints lb1:7700,lb2:7700,lb3:7700 status
  lbctl status --silent-threshold 1h`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			st, err := a.collectStatus(cmd)
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Value(a.stdout, a.format, st)
			}
			a.printClusterStatus(st)
			return nil
		}),
	}
	c.Flags().DurationVar(&a.silentThreshold, "silent-threshold", defaultSilentThreshold, silentThresholdHelp)
	return c
}

func (a *app) collectStatus(cmd *cobra.Command) (*clusterStatus, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	st := &clusterStatus{Problems: []string{}, Members: []memberHealth{}, VIPProblems: []vipHealth{}, OrphanedTenants: []orphanedTenant{}, GoneServices: []goneServices{}}
	if err := positive("--silent-threshold", a.silentThreshold); err != nil {
		return nil, err
	}

	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	if l, err := conn.Cluster.GetLeader(ctx, &edgelbv1.GetLeaderRequest{}); err == nil {
		st.Leader, st.Term = l.GetLeader().GetId(), l.GetTerm()
	} else {
		st.Problems = append(st.Problems, "no raft leader: "+status.Convert(err).Message())
	}
	members, err := conn.Cluster.ListMembers(ctx, &edgelbv1.ListMembersRequest{})
	if err != nil {
		return nil, err
	}
	tenant := ""
	if changed(cmd.Flags(), "tenant") {
		tenant = a.tenant
	}
	list, err := conn.VirtualServices.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{Tenant: tenant})
	listed := err == nil
	if err != nil {
		if client.RefusedReason(err) == "" {
			return nil, err
		}
		// The member cannot vouch for its replica (no leader, removed, not
		// caught up): status still reports the members, without services.
		st.Problems = append(st.Problems, "services not listed: "+status.Convert(err).Message())
		list = &edgelbv1.ListVirtualServicesResponse{}
	}
	st.Revision = list.GetRevision()
	st.Services = len(list.GetServices())

	// VIPs by address: all services on one address share its owner.
	type vipInfo struct {
		owner    string
		services []*edgelbv1.VirtualService
	}
	vips := map[string]*vipInfo{}
	var order []string
	assigned := map[string]int{}
	for _, vs := range list.GetServices() {
		v := vips[vs.GetVip()]
		if v == nil {
			v = &vipInfo{}
			vips[vs.GetVip()] = v
			order = append(order, vs.GetVip())
		}
		if v.owner == "" && vs.GetOwner() != "" {
			v.owner = vs.GetOwner()
			assigned[v.owner]++
		}
		v.services = append(v.services, vs)
	}
	st.VIPs = len(order)

	// Each member's own view, asked through the answering member.
	byID := map[string]*memberHealth{}
	var leaderCommit uint64
	statuses := map[string]*edgelbv1.MemberStatus{}
	for _, m := range members.GetMembers() {
		mh := memberHealth{ID: m.GetId(), State: stateName(m.GetState()), Suffrage: m.GetSuffrage(), Role: "unknown", AssignedVIPs: assigned[m.GetId()]}
		mctx, mcancel := a.rpcCtx(cmd)
		resp, err := conn.Cluster.GetMemberStatus(mctx, &edgelbv1.GetMemberStatusRequest{Id: m.GetId()})
		mcancel()
		if err != nil {
			mh.Error = status.Convert(err).Message()
		} else {
			s := resp.GetStatus()
			statuses[m.GetId()] = s
			mh.Reachable = true
			mh.Role = strings.ToLower(s.GetRaftState())
			mh.ServingVIPs = len(s.GetOwnedVips())
			mh.Applied = s.GetLastAppliedIndex()
			mh.Version = s.GetVersion()
			mh.NotReady = s.GetNotReadyReason()
			mh.Ready = mh.NotReady == ""
			// What the member itself warns about (an address pool that
			// holds its own address, ...): a hazard, so the cluster is degraded.
			for _, w := range s.GetWarnings() {
				st.Problems = append(st.Problems, fmt.Sprintf("member %s: %s", m.GetId(), w))
			}
			if m.GetId() == st.Leader {
				leaderCommit = s.GetCommitIndex()
			}
			// Only operators may read BGP status, and older members do not
			// have it: either way there is nothing to count.
			bctx, bcancel := a.rpcCtx(cmd)
			if b, err := conn.Cluster.GetBgpStatus(bctx, &edgelbv1.GetBgpStatusRequest{Id: m.GetId()}); err == nil {
				mh.BGPPeersDown, mh.BGPPeers = bgpPeersDown([]*edgelbv1.BgpStatus{b.GetStatus()})
				if mh.BGPPeersDown > 0 {
					st.Problems = append(st.Problems, fmt.Sprintf("member %s: %d of %d BGP peers down (lbctl bgp status %s)", m.GetId(), mh.BGPPeersDown, mh.BGPPeers, m.GetId()))
				}
			}
			bcancel()
		}
		st.Members = append(st.Members, mh)
	}
	for i := range st.Members {
		mh := &st.Members[i]
		byID[mh.ID] = mh
		if mh.Reachable && leaderCommit > mh.Applied {
			mh.Lag = leaderCommit - mh.Applied
		}
		if mh.Lag > maxHealthyLag {
			// Its status may have been read well before the leader's: ask
			// again, so only a member that really trails is reported.
			mctx, mcancel := a.rpcCtx(cmd)
			if resp, err := conn.Cluster.GetMemberStatus(mctx, &edgelbv1.GetMemberStatusRequest{Id: mh.ID}); err == nil {
				mh.Applied = max(mh.Applied, resp.GetStatus().GetLastAppliedIndex())
				mh.Lag = 0
				if leaderCommit > mh.Applied {
					mh.Lag = leaderCommit - mh.Applied
				}
			}
			mcancel()
		}
		switch {
		case !mh.Reachable:
			st.Problems = append(st.Problems, fmt.Sprintf("member %s does not answer: %s", mh.ID, mh.Error))
		case mh.Suffrage == "removed":
			st.Problems = append(st.Problems, fmt.Sprintf("member %s is in the member table but not in the raft configuration", mh.ID))
		case mh.ServingVIPs < mh.AssignedVIPs:
			st.Problems = append(st.Problems, fmt.Sprintf("member %s is assigned %d VIPs but serves %d (fenced from the leader, or its data plane is failing: see its log)", mh.ID, mh.AssignedVIPs, mh.ServingVIPs))
		}
		if mh.Reachable && mh.Lag > maxHealthyLag {
			st.Problems = append(st.Problems, fmt.Sprintf("member %s lags the leader by %d raft entries (applied %d, leader committed %d): it is catching up, or cannot reach the leader (see its log)",
				mh.ID, mh.Lag, mh.Applied, leaderCommit))
		}
		if mh.Reachable && !mh.Ready {
			st.Problems = append(st.Problems, fmt.Sprintf("member %s is not ready: %s", mh.ID, mh.NotReady))
		}
		if mh.State == "draining" {
			st.Problems = append(st.Problems, fmt.Sprintf("member %s is draining (lbctl member drain %s --undo returns it)", mh.ID, mh.ID))
		}
	}

	// bgp-pool VIPs have no owner by design: every eligible member serves them.
	bgpPools := map[string]bool{}
	pctx, pcancel := a.rpcCtx(cmd)
	if pl, err := conn.Pools.ListAddressPools(pctx, &edgelbv1.ListAddressPoolsRequest{}); err == nil {
		for _, p := range pl.GetPools() {
			if p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP {
				bgpPools[p.GetName()] = true
			}
		}
	}
	pcancel()
	for _, addr := range order {
		v := vips[addr]
		vh := vipHealth{VIP: addr, Owner: v.owner}
		bgpVIP := v.owner == "" && len(v.services) > 0 && bgpPools[v.services[0].GetPool()]
		if bgpVIP {
			vh.Owner = "(bgp)"
		}
		healthy := 0
		for _, vs := range v.services {
			vh.Services = append(vh.Services, vs.GetTenant()+"/"+vs.GetName())
			for _, b := range vs.GetBackends() {
				vh.Backends++
				if b.GetHealth().GetState() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY {
					desc := backendAddr(b, vs)
					if e := b.GetHealth().GetLastError(); e != "" {
						desc += " (" + e + ")"
					}
					vh.UnhealthyBackends = append(vh.UnhealthyBackends, desc)
				} else if !b.GetDrained() {
					healthy++
				}
			}
		}
		owner := byID[v.owner]
		switch {
		case bgpVIP:
			if healthy == 0 {
				vh.Problem = "no healthy backend: no member advertises it"
			}
		case v.owner == "":
			vh.Problem = "no owner: no member serves it (are all members draining or fenced?)"
		case owner == nil:
			vh.Problem = "owner " + v.owner + " is not a member"
		case !owner.Reachable:
			vh.Problem = "owner " + v.owner + " does not answer"
		case owner.State == "draining":
			vh.Problem = "owner " + v.owner + " is draining"
		case !servesVIP(statuses[v.owner], addr):
			vh.Problem = "owner " + v.owner + " does not program it"
		case len(vh.UnhealthyBackends) > 0 && healthy == 0:
			vh.Problem = "no healthy backend"
		case len(vh.UnhealthyBackends) > 0:
			vh.Problem = fmt.Sprintf("%d of %d backends unhealthy", len(vh.UnhealthyBackends), vh.Backends)
		}
		if vh.Problem != "" {
			st.VIPProblems = append(st.VIPProblems, vh)
		}
	}
	st.RecentMoves = a.recentMoves(cmd, conn.Watch, tenant, st.Revision)
	if listed {
		// Refused for the same reason as the services: said once above.
		a.orphans(cmd, conn, tenant, st)
	}
	switch {
	case st.Leader == "":
		st.Health = "unavailable"
	case len(st.Problems) > 0 || len(st.VIPProblems) > 0:
		st.Health = "degraded"
	default:
		st.Health = "healthy"
	}
	return st, nil
}

// orphans adds the tenants silent past the threshold that still have
// virtual services, and the services live cloud providers reported
// orphaned. A member too old to know heartbeats (Unimplemented) leaves them
// out; any other failure is a problem of its own.
func (a *app) orphans(cmd *cobra.Command, conn *client.Conn, tenant string, st *clusterStatus) {
	ts, now, err := a.listTenants(cmd, conn)
	if status.Code(err) == codes.Unimplemented {
		return
	}
	if err != nil {
		st.Problems = append(st.Problems, "tenants not listed: "+status.Convert(err).Message())
		return
	}
	silent := map[string]*edgelbv1.Tenant{}
	names := []string{}
	for _, t := range ts {
		n := t.GetName()
		if tenant != "" && n != tenant {
			continue
		}
		if isSilent(t, now, a.silentThreshold) {
			if t.GetVirtualServices() > 0 {
				silent[n] = t
				names = append(names, n)
			}
			continue
		}
		if gone := t.GetOrphanedServices(); len(gone) > 0 {
			st.GoneServices = append(st.GoneServices, goneServices{Tenant: n, Services: gone})
			st.Orphaned += len(gone)
			st.Problems = append(st.Problems, fmt.Sprintf("tenant %s: its cloud provider reports %d virtual services whose Kubernetes Service no longer exists and that it has not deleted (lbctl vip list --orphaned --tenant %s)",
				n, len(gone), n))
		}
	}
	sort.Strings(names)
	for _, n := range names {
		t := silent[n]
		d := silentFor(t, now)
		st.OrphanedTenants = append(st.OrphanedTenants, orphanedTenant{Tenant: n, LastSeen: t.GetLastSeen().AsTime(),
			SilentSeconds: int64(d.Seconds()), VirtualServices: int(t.GetVirtualServices())})
		st.Orphaned += int(t.GetVirtualServices())
		st.Problems = append(st.Problems, fmt.Sprintf("tenant %s: its cloud provider has been silent for %s; its %d virtual services are probably orphaned (lbctl vip list --orphaned; lbctl tenant gc %s)",
			n, humanDuration(d), t.GetVirtualServices(), n))
	}
}

// recentMoves replays the event history before revision rev (Watch from an
// older revision) and keeps the ownership moves. History that is gone (the
// server answers with a snapshot) or a failing stream yields what was found.
func (a *app) recentMoves(cmd *cobra.Command, w edgelbv1.WatchServiceClient, tenant string, rev uint64) []ownerMove {
	moves := []ownerMove{}
	if rev < 2 {
		return moves
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	stream, err := w.Watch(ctx, &edgelbv1.WatchRequest{ResumeRevision: max(rev, moveHistoryBack+1) - moveHistoryBack, Tenant: tenant})
	if err != nil {
		return moves
	}
	for {
		resp, err := stream.Recv()
		if err != nil || resp.GetSnapshot() {
			break
		}
		for _, ev := range resp.GetEvents() {
			vs := ev.GetVirtualService()
			why, ok := moveReasons[ev.GetOwnershipReason()]
			if vs == nil || !ok || ev.GetType() != edgelbv1.EventType_EVENT_TYPE_PUT || ev.GetRevision() > rev {
				continue
			}
			svc := vs.GetTenant() + "/" + vs.GetName()
			// One decision moves every service of an address at once.
			if n := len(moves); n > 0 && moves[n-1].VIP == vs.GetVip() && moves[n-1].Owner == vs.GetOwner() && moves[n-1].Reason == why.text {
				moves[n-1].Services = append(moves[n-1].Services, svc)
				moves[n-1].Revision = ev.GetRevision()
				continue
			}
			moves = append(moves, ownerMove{Time: ev.GetTime().AsTime(), Revision: ev.GetRevision(), VIP: vs.GetVip(),
				Services: []string{svc}, Owner: vs.GetOwner(), Reason: why.text, Unplanned: why.unplanned})
		}
		if resp.GetRevision() >= rev {
			break
		}
	}
	slices.Reverse(moves)
	if len(moves) > maxMoves {
		moves = moves[:maxMoves]
	}
	return moves
}

func servesVIP(s *edgelbv1.MemberStatus, vip string) bool {
	for _, v := range s.GetOwnedVips() {
		if v == vip {
			return true
		}
	}
	return false
}

// backendAddr is ADDR:PORT of a backend, with the port it is really reached on.
func backendAddr(b *edgelbv1.Backend, vs *edgelbv1.VirtualService) string {
	port := b.GetPort()
	if port == 0 && len(vs.GetPorts()) > 0 {
		port = vs.GetPorts()[0].GetBackendPort()
		if port == 0 {
			port = vs.GetPorts()[0].GetPort()
		}
	}
	host := b.GetAddress()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == 0 {
		return host
	}
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

func (a *app) printClusterStatus(st *clusterStatus) {
	w := a.stdout
	leader := "none"
	if st.Leader != "" {
		leader = fmt.Sprintf("%s (term %d)", st.Leader, st.Term)
	}
	reachable := 0
	for _, m := range st.Members {
		if m.Reachable {
			reachable++
		}
	}
	unowned := 0
	for _, v := range st.VIPProblems {
		if v.Owner == "" {
			unowned++
		}
	}
	tw := output.TableWriter(w)
	output.Row(tw, "CLUSTER", strings.ToUpper(st.Health))
	output.Row(tw, "LEADER", leader)
	members := fmt.Sprintf("%d of %d reachable", reachable, len(st.Members))
	bgpDown, bgpPeers := 0, 0
	for _, m := range st.Members {
		bgpDown += m.BGPPeersDown
		bgpPeers += m.BGPPeers
	}
	if bgpPeers > 0 {
		members += fmt.Sprintf("; BGP peers down: %d of %d", bgpDown, bgpPeers)
	}
	output.Row(tw, "MEMBERS", members)
	output.Row(tw, "VIPS", fmt.Sprintf("%d (%d virtual services, revision %d); %d need attention, %d without owner", st.VIPs, st.Services, st.Revision, len(st.VIPProblems), unowned))
	orphaned := "0"
	if st.Orphaned > 0 {
		var ts []string
		for _, o := range st.OrphanedTenants {
			ts = append(ts, fmt.Sprintf("tenant %s silent %s", o.Tenant, humanDuration(time.Duration(o.SilentSeconds)*time.Second)))
		}
		for _, g := range st.GoneServices {
			ts = append(ts, fmt.Sprintf("tenant %s: %d Service gone", g.Tenant, len(g.Services)))
		}
		orphaned = fmt.Sprintf("%d virtual services (%s)", st.Orphaned, strings.Join(ts, "; "))
	}
	output.Row(tw, "ORPHANS", orphaned)
	tw.Flush()

	fmt.Fprintln(w)
	tw = output.TableWriter(w)
	output.Row(tw, "MEMBER", "ROLE", "STATE", "REACHABLE", "VIPS", "SERVING", "APPLIED", "LAG", "VERSION")
	for _, m := range st.Members {
		if !m.Reachable {
			output.Row(tw, m.ID, m.Role, m.State, "no", strconv.Itoa(m.AssignedVIPs), "-", "-", "-", "-")
			continue
		}
		output.Row(tw, m.ID, m.Role, m.State, "yes", strconv.Itoa(m.AssignedVIPs), strconv.Itoa(m.ServingVIPs),
			u64(m.Applied), u64(m.Lag), orDash(m.Version))
	}
	tw.Flush()

	if len(st.VIPProblems) > 0 {
		fmt.Fprintln(w)
		tw = output.TableWriter(w)
		output.Row(tw, "VIP", "SERVICES", "OWNER", "PROBLEM", "UNHEALTHY BACKENDS")
		for _, v := range st.VIPProblems {
			svcs := v.Services
			if len(svcs) > 3 {
				svcs = append(svcs[:3:3], fmt.Sprintf("+%d", len(v.Services)-3))
			}
			bad := v.UnhealthyBackends
			if len(bad) > 3 {
				bad = append(bad[:3:3], fmt.Sprintf("+%d", len(v.UnhealthyBackends)-3))
			}
			output.Row(tw, v.VIP, strings.Join(svcs, ","), orDash(v.Owner), v.Problem, orDash(strings.Join(bad, ", ")))
		}
		tw.Flush()
	}
	if len(st.RecentMoves) > 0 {
		fmt.Fprintln(w)
		tw = output.TableWriter(w)
		output.Row(tw, "RECENT MOVES", "VIP", "TO", "REASON", "SERVICES")
		for _, m := range st.RecentMoves {
			when := "-"
			if !m.Time.IsZero() && m.Time.Unix() > 0 {
				when = m.Time.Local().Format("2006-01-02 15:04:05")
			}
			reason := m.Reason
			if m.Unplanned {
				reason = "FAILOVER: " + reason
			}
			svcs := m.Services
			if len(svcs) > 3 {
				svcs = append(svcs[:3:3], fmt.Sprintf("+%d", len(m.Services)-3))
			}
			output.Row(tw, when, m.VIP, m.Owner, reason, strings.Join(svcs, ","))
		}
		tw.Flush()
	}
	if len(st.Problems) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "PROBLEMS")
		sort.Strings(st.Problems)
		for _, p := range st.Problems {
			fmt.Fprintln(w, "  - "+p)
		}
	}
}
