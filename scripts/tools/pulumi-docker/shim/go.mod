// The upstream provider's constructor lives in its internal/provider package, which only code under
// github.com/terraform-providers/terraform-provider-docker/ may import. This small module sits at
// that path (replaced by ./shim in ../go.mod) and hands the provider to our main package.
module github.com/terraform-providers/terraform-provider-docker/shim

go 1.25.11

require (
	github.com/hashicorp/terraform-plugin-sdk/v2 v2.40.1
	github.com/terraform-providers/terraform-provider-docker v0.0.0-20260916201441-96d331c98ff4
)
