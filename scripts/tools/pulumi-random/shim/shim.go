// Package shim exposes the upstream Terraform random provider (a terraform-plugin-framework
// provider) to the Pulumi bridge; see ../main.go.
package shim

import (
	tfpf "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/terraform-providers/terraform-provider-random/internal/provider"
)

// NewProvider returns the upstream plugin-framework provider.
func NewProvider() tfpf.Provider { return provider.New() }
