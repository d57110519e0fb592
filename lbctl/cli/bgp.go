package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbctl/output"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func (a *app) bgpCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bgp",
		Short: "Show the members' BGP speakers (bgp-mode address pools)",
		Example: `  lbctl bgp status
  lbctl bgp status edge2 -o json`,
	}
	c.AddCommand(a.bgpStatusCmd())
	return c
}

func (a *app) bgpStatus(cmd *cobra.Command, id string) (*edgelbv1.BgpStatus, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	resp, err := conn.Cluster.GetBgpStatus(ctx, &edgelbv1.GetBgpStatusRequest{Id: id})
	if err != nil {
		return nil, err
	}
	return resp.GetStatus(), nil
}

func (a *app) bgpStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status [ID]",
		Short: "Show each member's BGP peers, session and BFD state, uptime and prefixes",
		Long: `Show, per member, each BGP peer (router) with its session state, BFD state,
session uptime and the prefixes advertised to and received from it, and the
prefixes the member advertises (docs/BGP.md). A member without bgp peers
configured shows "bgp off".

With ID: that member only (the answering member asks it). -o json/yaml prints
{"items": [BgpStatus...]} (one item with ID). Operators and admins only.`,
		Example: `  lbctl bgp status
  lbctl bgp status edge2
  lbctl bgp status -o json | jq -r '.items[].peers[] | select(.sessionState != "established") | .address'`,
		Args: cobra.MaximumNArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			var ids []string
			if len(args) == 1 {
				ids = args
			} else {
				members, err := a.listMembers(cmd)
				if err != nil {
					return err
				}
				for _, m := range members.GetMembers() {
					ids = append(ids, m.GetId())
				}
			}
			var sts []*edgelbv1.BgpStatus
			errs := map[string]error{}
			var firstErr error
			for _, id := range ids {
				st, err := a.bgpStatus(cmd, id)
				if err != nil {
					if len(args) == 1 {
						return err
					}
					errs[id] = err
					if firstErr == nil {
						firstErr = err
					}
					st = &edgelbv1.BgpStatus{MemberId: id}
				}
				sts = append(sts, st)
			}
			if a.format.Machine() {
				if err := output.List(a.stdout, a.format, sts); err != nil {
					return err
				}
			} else {
				a.printBGP(sts, errs)
			}
			if firstErr != nil && exitcode.Code(firstErr) != exitcode.OK {
				return fmt.Errorf("%d of %d members did not answer: %w", len(errs), len(sts), firstErr)
			}
			return nil
		}),
	}
}

func (a *app) printBGP(sts []*edgelbv1.BgpStatus, errs map[string]error) {
	tw := output.TableWriter(a.stdout)
	output.Row(tw, "MEMBER", "PEER", "ASN", "SESSION", "BFD", "UPTIME", "ADVERTISED", "RECEIVED", "PREFIXES")
	now := time.Now()
	for _, st := range sts {
		id := st.GetMemberId()
		prefixes := strconv.Itoa(len(st.GetAdvertisedPrefixes()))
		if st.GetGracefulShutdown() {
			prefixes += " (graceful shutdown)"
		}
		switch {
		case errs[id] != nil:
			output.Row(tw, id, "-", "-", "error: "+oneLine(errs[id]), "-", "-", "-", "-", "-")
			continue
		case !st.GetEnabled():
			output.Row(tw, id, "-", "-", "bgp off", "-", "-", "-", "-", "-")
			continue
		}
		for _, p := range st.GetPeers() {
			up := "-"
			if p.GetEstablishedTime() != nil {
				up = output.Age(p.GetEstablishedTime(), now)
			}
			output.Row(tw, id, p.GetAddress(), strconv.FormatUint(uint64(p.GetAsn()), 10), p.GetSessionState(), p.GetBfdState(), up,
				strconv.FormatUint(p.GetPrefixesAdvertised(), 10), strconv.FormatUint(p.GetPrefixesReceived(), 10), prefixes)
		}
	}
	tw.Flush()
}

// oneLine is an error's message on one line, for a table cell.
func oneLine(err error) string {
	return strings.ReplaceAll(exitcode.Message(err), "\n", " ")
}

// bgpPeersDown counts, over the members that answered, the BGP peers whose
// session is not established (for lbctl status).
func bgpPeersDown(sts []*edgelbv1.BgpStatus) (down, total int) {
	for _, st := range sts {
		for _, p := range st.GetPeers() {
			total++
			if p.GetSessionState() != "established" {
				down++
			}
		}
	}
	return down, total
}
