// Package shim exposes the upstream Terraform docker provider (an SDKv2 provider) to the Pulumi
// bridge; see ../main.go.
package shim

import (
	"github.com/hashicorp/terraform-plugin-sdk/v2/helper/schema"
	"github.com/terraform-providers/terraform-provider-docker/internal/provider"
)

// NewProvider returns the upstream SDKv2 provider.
func NewProvider() *schema.Provider { return provider.New("dev")() }
