package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/edgelb/edgelb/lbctl/output"
	"github.com/spf13/cobra"
)

func (a *app) completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a shell completion script. It completes commands, flags, and the names
of virtual services, pools and contexts (asking the cluster when needed).`,
		Example: `  source <(lbctl completion bash)
  lbctl completion zsh > "${fpath[1]}/_lbctl"
  lbctl completion fish > ~/.config/fish/completions/lbctl.fish
  lbctl completion powershell | Out-String | Invoke-Expression`,
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.stdout, true)
			case "zsh":
				return root.GenZshCompletion(a.stdout)
			case "fish":
				return root.GenFishCompletion(a.stdout, true)
			default:
				return root.GenPowerShellCompletionWithDesc(a.stdout)
			}
		}),
	}
}

func clientVersion() string {
	v := Version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return v
}

func (a *app) versionCmd() *cobra.Command {
	var clientOnly bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print lbctl's version and the answering server's",
		Example: `  lbctl version
  lbctl version --client -o json`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			out := map[string]string{"clientVersion": clientVersion(), "goVersion": runtime.Version()}
			var serverErr error
			if !clientOnly {
				st, err := a.memberStatus(cmd, "")
				if err != nil {
					serverErr = err
				} else {
					out["serverVersion"] = st.GetVersion()
					out["serverMember"] = st.GetMember().GetId()
				}
			}
			if a.format.Machine() {
				if err := output.Value(a.stdout, a.format, out); err != nil {
					return err
				}
				return serverErr
			}
			fmt.Fprintf(a.stdout, "Client: %s (%s)\n", out["clientVersion"], out["goVersion"])
			if sv, ok := out["serverVersion"]; ok {
				fmt.Fprintf(a.stdout, "Server: %s (member %s)\n", orDash(sv), out["serverMember"])
			}
			return serverErr
		}),
	}
	c.Flags().BoolVar(&clientOnly, "client", false, "do not ask the server")
	return c
}
