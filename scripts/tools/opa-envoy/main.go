// Command opa is OPA (github.com/open-policy-agent/opa, the version in go.mod) with the Envoy
// External Authorization gRPC plugin of package extauthz, registered as "envoy_ext_authz_grpc"
// (and "envoy.ext_authz.grpc"). It is the agentd stand-in for upstream's opa-envoy-plugin build,
// which our Go module proxy does not serve; scripts/tools/opa.sh builds it. See
// docs/toolchain/opa.md.
package main

import (
	"errors"
	"os"

	"github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/v1/runtime"

	"agentd.local/tools/opa-envoy/extauthz"
)

func main() {
	runtime.RegisterPlugin(extauthz.LegacyPluginName, extauthz.Factory{})
	runtime.RegisterPlugin(extauthz.PluginName, extauthz.Factory{})

	if err := cmd.RootCommand.Execute(); err != nil {
		var exit *cmd.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.Exit)
		}
		os.Exit(1)
	}
}
