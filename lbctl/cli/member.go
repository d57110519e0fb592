package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

func (a *app) memberCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "member",
		Aliases: []string{"members"},
		Short:   "Manage the edge hosts (raft members) of the cluster",
		Example: `  lbctl member list
  lbctl member status`,
	}
	c.AddCommand(a.memberListCmd(), a.memberAddCmd(), a.memberRemoveCmd(), a.memberStatusCmd(), a.memberDrainCmd())
	return c
}

func stateName(s edgelbv1.MemberState) string {
	switch s {
	case edgelbv1.MemberState_MEMBER_STATE_ACTIVE:
		return "active"
	case edgelbv1.MemberState_MEMBER_STATE_DRAINING:
		return "draining"
	case edgelbv1.MemberState_MEMBER_STATE_LEFT:
		return "left"
	default:
		return "unknown"
	}
}

func (a *app) listMembers(cmd *cobra.Command) (*edgelbv1.ListMembersResponse, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	return conn.Cluster.ListMembers(ctx, &edgelbv1.ListMembersRequest{})
}

func (a *app) memberListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the members; LEADER marks the raft leader",
		Example: `  lbctl member list
  lbctl member list -o json | jq -r '.items[].id'`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			resp, err := a.listMembers(cmd)
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.List(a.stdout, a.format, resp.GetMembers())
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "ID", "RAFT ADDRESS", "API ADDRESS", "INTERFACE", "STATE", "SUFFRAGE", "LEADER")
			for _, m := range resp.GetMembers() {
				leader := ""
				if m.GetId() == resp.GetLeaderId() {
					leader = "*"
				}
				output.Row(tw, m.GetId(), m.GetRaftAddress(), m.GetApiAddress(), m.GetDataInterface(),
					stateName(m.GetState()), m.GetSuffrage(), leader)
			}
			return tw.Flush()
		}),
	}
}

func (a *app) memberAddCmd() *cobra.Command {
	var m edgelbv1.Member
	var nonvoter bool
	c := &cobra.Command{
		Use:   "add ID --raft-addr HOST:PORT --api-addr HOST:PORT",
		Short: "Add a member to the raft cluster (checked, then promoted once caught up)",
		Long: `Add a member. The safe order:

  1. On the new host, start lbd with --join naming any member's API address
     (and its own --id, --api-addr, --raft-addr). It asks the leader to add it,
     through the same checks as this command; nothing more is needed.
  2. Or start it that way and then run this command with the same id and
     addresses (e.g. to set --interface). Adding a member that is already in
     the cluster with these addresses changes nothing.

Never start the new lbd without --join: it would bootstrap a cluster of its
own, and the add is refused (MEMBER_OF_OTHER_CLUSTER).

Before anything is committed the leader checks the new member: its addresses
are no wildcard (0.0.0.0, ::), resolve, and are not another member's under
another spelling (localhost:7701 is 127.0.0.1:7701); lbd answers on both ports,
with this id, and belongs to no other cluster. A failed check changes nothing;
the error says what to fix and carries a reason (e.g. [MEMBER_ADDRESS_WILDCARD]).

The member then joins as a non-voter, receives the state, and becomes a voter
once it has caught up; one that does not within lbd's
membership.catchUpTimeout (30s) is removed again and the command fails saying
why. The command waits for all of this (at least 60s, or --timeout if longer).`,
		Example: `  # on the new host (10.1.0.4), with its certificates:
  lbd --id lb4 --api-addr 10.1.0.4:7700 --raft-addr 10.1.0.4:7701 --join 10.1.0.1:7700 --interface eth1 \
      --tls-ca ca.crt --tls-cert lb4.crt --tls-key lb4.key
  # then, optionally, from anywhere:
  lbctl member add lb4 --raft-addr 10.1.0.4:7701 --api-addr 10.1.0.4:7700 --interface eth1
  lbctl member list

  # a member that replicates but never votes:
  lbctl member add lb5 --raft-addr 10.1.0.5:7701 --api-addr 10.1.0.5:7700 --nonvoter`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			m.Id = args[0]
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			// The leader waits for the new member to catch up (30s by default).
			ctx, cancel := context.WithTimeout(cmd.Context(), max(a.timeout, 60*time.Second))
			defer cancel()
			resp, err := conn.Cluster.AddMember(ctx, &edgelbv1.AddMemberRequest{Member: &m, Nonvoter: nonvoter})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp.GetMember())
			}
			fmt.Fprintf(a.stdout, "member %s added\n", resp.GetMember().GetId())
			return nil
		}),
	}
	c.Flags().StringVar(&m.RaftAddress, "raft-addr", "", "the member's raft address host:port")
	c.Flags().StringVar(&m.ApiAddress, "api-addr", "", "the member's gRPC API address host:port")
	c.Flags().StringVar(&m.DataInterface, "interface", "", "the data interface VIPs are added to (default: lbd's own setting)")
	c.Flags().BoolVar(&nonvoter, "nonvoter", false, "join as a non-voter (replicates, does not vote)")
	c.MarkFlagRequired("raft-addr")
	c.MarkFlagRequired("api-addr")
	return c
}

func (a *app) memberRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "remove ID",
		Short:   "Remove a member from the raft cluster (its VIPs move to others)",
		Example: `  lbctl member remove lb4`,
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Cluster.RemoveMember(ctx, &edgelbv1.RemoveMemberRequest{Id: args[0]})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			fmt.Fprintf(a.stdout, "member %s removed\n", args[0])
			return nil
		}),
	}
}

func (a *app) memberStatus(cmd *cobra.Command, id string) (*edgelbv1.MemberStatus, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	resp, err := conn.Cluster.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}

func (a *app) memberStatusCmd() *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "status [ID]",
		Short: "Show members' raft state, applied index and owned VIPs",
		Long: `Show a member's own view: raft state, term, indexes, leader, owned VIPs.

With ID: that member (the answering member forwards the question to it).
Without ID: -o table/wide shows every member, one row each (a member that does
not answer shows its error); -o json/yaml prints the answering member's
MemberStatus, or with --all every member's as {"items": [...]}.`,
		Example: `  lbctl member status
  lbctl member status edge2 -o yaml
  lbctl --endpoints 127.0.0.1:7711 member status -o json | jq -r .lastAppliedIndex
  lbctl member status --all -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 || (a.format.Machine() && !all) {
				id := ""
				if len(args) == 1 {
					id = args[0]
				}
				st, err := a.memberStatus(cmd, id)
				if err != nil {
					return err
				}
				if a.format.Machine() {
					return output.Message(a.stdout, a.format, st)
				}
				a.printStatuses([]*edgelbv1.MemberStatus{st}, nil)
				return nil
			}
			members, err := a.listMembers(cmd)
			if err != nil {
				return err
			}
			var sts []*edgelbv1.MemberStatus
			errs := map[string]error{}
			var firstErr error
			for _, m := range members.GetMembers() {
				st, err := a.memberStatus(cmd, m.GetId())
				if err != nil {
					errs[m.GetId()] = err
					if firstErr == nil {
						firstErr = err
					}
					st = &edgelbv1.MemberStatus{Member: m}
				}
				sts = append(sts, st)
			}
			if a.format.Machine() {
				if err := output.List(a.stdout, a.format, sts); err != nil {
					return err
				}
			} else {
				a.printStatuses(sts, errs)
			}
			// Show every row, but tell scripts that a member did not answer.
			if firstErr != nil && exitcode.Code(firstErr) != exitcode.OK {
				return fmt.Errorf("%d of %d members did not answer: %w", len(errs), len(sts), firstErr)
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&all, "all", false, "every member, also with -o json|yaml")
	return c
}

func (a *app) printStatuses(sts []*edgelbv1.MemberStatus, errs map[string]error) {
	tw := output.TableWriter(a.stdout)
	wide := a.format == output.Wide
	head := []string{"ID", "RAFT STATE", "TERM", "APPLIED", "COMMIT", "LEADER", "VIPS"}
	if wide {
		head = append(head, "LAST LOG", "REVISION", "DATA PLANE", "VERSION", "OWNED VIPS")
	}
	output.Row(tw, head...)
	for _, st := range sts {
		id := st.GetMember().GetId()
		if err, bad := errs[id]; bad {
			output.Row(tw, id, "unreachable: "+status.Convert(err).Message())
			continue
		}
		row := []string{id, st.GetRaftState(), u64(st.GetTerm()), u64(st.GetLastAppliedIndex()), u64(st.GetCommitIndex()),
			st.GetLeaderId(), strconv.Itoa(len(st.GetOwnedVips()))}
		if wide {
			row = append(row, u64(st.GetLastLogIndex()), u64(st.GetRevision()), st.GetDataPlane(), st.GetVersion(),
				strings.Join(st.GetOwnedVips(), ","))
		}
		output.Row(tw, row...)
	}
	tw.Flush()
	// Warnings after the table: sentences, too long for a column.
	for _, st := range sts {
		for _, w := range st.GetWarnings() {
			fmt.Fprintf(a.stdout, "WARNING %s: %s\n", st.GetMember().GetId(), w)
		}
		// A service the member's data plane cannot program is left out
		// there while the rest is served: say so, or it would only show in
		// the logs and a metric.
		for _, x := range st.GetIsolatedServices() {
			fmt.Fprintf(a.stdout, "WARNING %s cannot program %s\n", st.GetMember().GetId(), x)
		}
	}
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func (a *app) leaderCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "leader",
		Short: "Show the raft leader",
		Example: `  lbctl leader
  lbctl leader -o json | jq -r .leader.id
  lbctl leader transfer edge2`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Cluster.GetLeader(ctx, &edgelbv1.GetLeaderRequest{})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "ID", "API ADDRESS", "RAFT ADDRESS", "TERM")
			l := resp.GetLeader()
			output.Row(tw, l.GetId(), l.GetApiAddress(), l.GetRaftAddress(), u64(resp.GetTerm()))
			return tw.Flush()
		}),
	}
	c.AddCommand(&cobra.Command{
		Use:   "transfer [ID]",
		Short: "Hand leadership to another member (default: the most up-to-date follower)",
		Example: `  lbctl leader transfer
  lbctl leader transfer edge2`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Cluster.TransferLeadership(ctx, &edgelbv1.TransferLeadershipRequest{TargetId: target})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			fmt.Fprintf(a.stdout, "leadership transferred to %s\n", resp.GetLeader().GetId())
			return nil
		}),
	})
	return c
}
