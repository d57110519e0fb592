package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/edgelb/edgelb/lbctl/spec"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
)

func (a *app) poolCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "pool",
		Aliases: []string{"pools"},
		Short:   "Manage the address pools VIPs are allocated from",
		Example: `  lbctl pool create public --range 192.0.2.0/24
  lbctl pool update public --add-range 198.51.100.64/28
  lbctl pool list`,
	}
	c.AddCommand(a.poolCreateCmd(), a.poolGetCmd(), a.poolListCmd(), a.poolUpdateCmd(), a.poolDeleteCmd())
	return c
}

func (a *app) poolCreateCmd() *cobra.Command {
	var ranges, tenants, communities, large []string
	var manual, allowHost bool
	var mode string
	var localPref, aggLen, aggLen6 uint32
	c := &cobra.Command{
		Use:   "create NAME --range CIDR|FIRST-LAST ...",
		Short: "Create an address pool",
		Long: `Create an address pool. A range that holds an address of a member's data
interface or a default gateway is refused (exit code 6): a VIP allocated there
would be announced over the host's own traffic. --allow-host-addresses accepts
it for an address that is meant to be a VIP.

--mode bgp advertises the pool's VIPs over BGP from every eligible member
(docs/BGP.md) instead of one owner answering ARP/NDP; the --community,
--large-community, --local-pref and --aggregation-length flags set the
routes' attributes. The mode cannot be changed later.`,
		Example: `  lbctl pool create public --range 192.0.2.0/24
  lbctl pool create team-a --range 198.51.100.10-198.51.100.20 --tenant-allowed cluster-a
  lbctl pool create v6 --range 2001:db8:1::/112 --manual   # only for services that name it
  lbctl pool create rack --range 100.64.10.0/26 --mode bgp --community 65000:100 --local-pref 200`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			p := &edgelbv1.AddressPool{Name: args[0], Tenants: splitList(strings.Join(tenants, ",")), Manual: manual, AllowHostAddresses: allowHost}
			bgpFlags := len(communities) > 0 || len(large) > 0 || changed(cmd.Flags(), "local-pref") || changed(cmd.Flags(), "aggregation-length") || changed(cmd.Flags(), "aggregation-length-v6")
			switch mode {
			case "", "l2":
				if bgpFlags {
					return usagef("--community, --large-community, --local-pref and --aggregation-length need --mode bgp")
				}
				if mode == "l2" {
					p.AnnounceMode = edgelbv1.AnnounceMode_ANNOUNCE_MODE_L2
				}
			case "bgp":
				p.AnnounceMode = edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
				if bgpFlags {
					p.Bgp = &edgelbv1.BgpAttributes{Communities: splitList(strings.Join(communities, ",")), LargeCommunities: splitList(strings.Join(large, ",")),
						AggregationLength: aggLen, AggregationLengthV6: aggLen6}
					if changed(cmd.Flags(), "local-pref") {
						p.Bgp.LocalPreference = &localPref
					}
				}
			default:
				return usagef("--mode: %q is not l2 or bgp", mode)
			}
			for _, r := range splitList(strings.Join(ranges, ",")) {
				canon, err := spec.ParseRange(r)
				if err != nil {
					return usagef("--range: %w", err)
				}
				p.Ranges = append(p.Ranges, canon)
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: p})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp.GetPool())
			}
			fmt.Fprintf(a.stdout, "pool %s created\n", resp.GetPool().GetName())
			return nil
		}),
	}
	c.Flags().StringArrayVar(&ranges, "range", nil, "addresses, repeatable: "+spec.RangeSyntax)
	c.Flags().StringArrayVar(&tenants, "tenant-allowed", nil, "tenant that may use the pool, repeatable (default: every tenant)")
	c.Flags().BoolVar(&manual, "manual", false, "allocate from this pool only for services that name it with --pool")
	c.Flags().BoolVar(&allowHost, "allow-host-addresses", false, "accept ranges that hold a member's interface address or default gateway")
	c.Flags().StringVar(&mode, "mode", "", "how VIPs are announced: l2 (default: one owner, ARP/NDP) or bgp (every eligible member, ECMP)")
	c.Flags().StringArrayVar(&communities, "community", nil, "BGP community ASN:value on the pool's routes, repeatable (--mode bgp)")
	c.Flags().StringArrayVar(&large, "large-community", nil, "BGP large community global:local1:local2, repeatable (--mode bgp)")
	c.Flags().Uint32Var(&localPref, "local-pref", 0, "LOCAL_PREF on iBGP sessions (--mode bgp; default: not sent)")
	c.Flags().Uint32Var(&aggLen, "aggregation-length", 0, "prefix length advertised per IPv4 VIP (--mode bgp; default 32)")
	c.Flags().Uint32Var(&aggLen6, "aggregation-length-v6", 0, "prefix length advertised per IPv6 VIP (--mode bgp; default 128)")
	c.MarkFlagRequired("range")
	return c
}

func (a *app) poolUpdateCmd() *cobra.Command {
	var add, remove, tenants []string
	var allTenants, manual, allowHost bool
	var ifGen uint64
	c := &cobra.Command{
		Use:   "update NAME [--add-range R] [--remove-range R] [--tenant-allowed T | --all-tenants] [--manual=BOOL]",
		Short: "Change an address pool: add or remove ranges, tenants, manual",
		Long: `Change an address pool; only what the flags name changes. The change is one
raft command: it applies whole or not at all.

--remove-range names a range as 'lbctl pool get' lists it (or the same
addresses written another way). Removing a range is refused while a VIP
allocated from it exists (exit code 6; the message names the VIPs): delete
those virtual services first. --tenant-allowed replaces the tenants (repeat
it for several); --all-tenants opens the pool to every tenant. Closing the
pool to a tenant that holds VIPs in it is refused the same way.

--if-generation refuses the change (exit code 6) if the pool changed since
that generation ('lbctl pool get NAME -o json | jq -r .pool.generation').`,
		Example: `  lbctl pool update public --add-range 198.51.100.64/28
  lbctl pool update public --remove-range 203.0.113.0/28
  lbctl pool update team-a --tenant-allowed cluster-a --tenant-allowed cluster-b
  lbctl pool update public --all-tenants --manual=false
  lbctl pool update public --add-range 198.51.100.128/28 --if-generation 4 -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completePools,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			req := &edgelbv1.UpdateAddressPoolRequest{Name: args[0], ExpectedGeneration: ifGen}
			for _, x := range []struct {
				flag string
				in   []string
				out  *[]string
			}{{"--add-range", add, &req.AddRanges}, {"--remove-range", remove, &req.RemoveRanges}} {
				for _, r := range splitList(strings.Join(x.in, ",")) {
					canon, err := spec.ParseRange(r)
					if err != nil {
						return usagef("%s: %w", x.flag, err)
					}
					*x.out = append(*x.out, canon)
				}
			}
			if allTenants && changed(cmd.Flags(), "tenant-allowed") {
				return usagef("--all-tenants and --tenant-allowed contradict each other; give one")
			}
			if changed(cmd.Flags(), "tenant-allowed") {
				req.Tenants, req.SetTenants = splitList(strings.Join(tenants, ",")), true
				if len(req.Tenants) == 0 {
					return usagef("--tenant-allowed: no tenant given; to open the pool to every tenant use --all-tenants")
				}
			}
			if allTenants {
				req.SetTenants = true
			}
			if changed(cmd.Flags(), "manual") {
				req.Manual = &manual
			}
			if changed(cmd.Flags(), "allow-host-addresses") {
				req.AllowHostAddresses = &allowHost
			}
			if len(req.AddRanges) == 0 && len(req.RemoveRanges) == 0 && !req.SetTenants && req.Manual == nil && req.AllowHostAddresses == nil {
				return usagef("nothing to change: give --add-range, --remove-range, --tenant-allowed, --all-tenants, --manual or --allow-host-addresses")
			}
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Pools.UpdateAddressPool(ctx, req)
			if err != nil {
				return err // Aborted already says to read the pool again
			}
			p := resp.GetPool()
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, p)
			}
			fmt.Fprintf(a.stdout, "pool %s updated, generation %d\n", p.GetName(), p.GetGeneration())
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "NAME", "RANGES", "TENANTS", "MANUAL", "GENERATION", "AGE")
			output.Row(tw, p.GetName(), strings.Join(p.GetRanges(), ","), strings.Join(p.GetTenants(), ","),
				strconv.FormatBool(p.GetManual()), strconv.FormatUint(p.GetGeneration(), 10), output.Age(p.GetCreateTime(), time.Now()))
			return tw.Flush()
		}),
	}
	c.Flags().StringArrayVar(&add, "add-range", nil, "range to add, repeatable: "+spec.RangeSyntax)
	c.Flags().StringArrayVar(&remove, "remove-range", nil, "range to remove, repeatable, as 'lbctl pool get' lists it")
	c.Flags().StringArrayVar(&tenants, "tenant-allowed", nil, "replace the tenants that may use the pool, repeatable")
	c.Flags().BoolVar(&allTenants, "all-tenants", false, "open the pool to every tenant")
	c.Flags().BoolVar(&manual, "manual", false, "allocate from this pool only for services that name it (--manual=false undoes)")
	c.Flags().BoolVar(&allowHost, "allow-host-addresses", false, "accept ranges that hold a member's interface address or default gateway (--allow-host-addresses=false undoes)")
	c.Flags().Uint64Var(&ifGen, "if-generation", 0, "update only if the pool is still at this generation")
	return c
}

func (a *app) poolGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Show one address pool and how much of it is used",
		Long: `Show one address pool. -o json|yaml prints {"pool": {...}, "used": "N",
"size": "N"} (the API's response), since usage is not part of the pool itself.`,
		Example: `  lbctl pool get public
  lbctl pool get public -o json | jq -r .used`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completePools,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Pools.GetAddressPool(ctx, &edgelbv1.GetAddressPoolRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "NAME", "RANGES", "TENANTS", "MANUAL", "MODE", "USED", "SIZE", "GENERATION", "AGE")
			p := resp.GetPool()
			output.Row(tw, p.GetName(), strings.Join(p.GetRanges(), ","), strings.Join(p.GetTenants(), ","),
				strconv.FormatBool(p.GetManual()), poolMode(p), strconv.FormatUint(resp.GetUsed(), 10), strconv.FormatUint(resp.GetSize(), 10),
				strconv.FormatUint(p.GetGeneration(), 10), output.Age(p.GetCreateTime(), time.Now()))
			return tw.Flush()
		}),
	}
}

func (a *app) poolListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List address pools",
		Example: `  lbctl pool list
  lbctl pool list -o json | jq -r '.items[].name'`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			pools, err := a.listPools(cmd)
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.List(a.stdout, a.format, pools)
			}
			tw := output.TableWriter(a.stdout)
			output.Row(tw, "NAME", "RANGES", "TENANTS", "MANUAL", "MODE", "AGE")
			for _, p := range pools {
				output.Row(tw, p.GetName(), strings.Join(p.GetRanges(), ","), strings.Join(p.GetTenants(), ","),
					strconv.FormatBool(p.GetManual()), poolMode(p), output.Age(p.GetCreateTime(), time.Now()))
			}
			return tw.Flush()
		}),
	}
}

func (a *app) listPools(cmd *cobra.Command) ([]*edgelbv1.AddressPool, error) {
	conn, err := a.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.rpcCtx(cmd)
	defer cancel()
	resp, err := conn.Pools.ListAddressPools(ctx, &edgelbv1.ListAddressPoolsRequest{})
	if err != nil {
		return nil, err
	}
	pools := resp.GetPools()
	sort.SliceStable(pools, func(i, j int) bool { return pools[i].GetName() < pools[j].GetName() })
	return pools, nil
}

func (a *app) poolDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete an address pool (refused while a VIP uses it: exit code 6)",
		Example:           `  lbctl pool delete team-a`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completePools,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			conn, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := a.rpcCtx(cmd)
			defer cancel()
			resp, err := conn.Pools.DeleteAddressPool(ctx, &edgelbv1.DeleteAddressPoolRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if a.format.Machine() {
				return output.Message(a.stdout, a.format, resp)
			}
			fmt.Fprintf(a.stdout, "pool %s deleted\n", args[0])
			return nil
		}),
	}
}

func (a *app) completePools(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	return a.completeNames(cmd, args, func() ([]string, error) { return names(a.listPools(cmd)) })
}

// completeNames completes the one argument of a command that names an object
// on lbd, with the names list fetches. Completion bypasses PersistentPreRunE,
// so settings are resolved here; any failure offers nothing.
func (a *app) completeNames(cmd *cobra.Command, args []string, list func() ([]string, error)) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || a.resolve(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ns, err := list()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return ns, cobra.ShellCompDirectiveNoFileComp
}

// names are the names of objects, for completion; it passes err through.
func names[T interface{ GetName() string }](objs []T, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	return out, nil
}

// poolMode is a pool's announce mode as lbctl's --mode spells it.
func poolMode(p *edgelbv1.AddressPool) string {
	if p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP {
		return "bgp"
	}
	return "l2"
}
