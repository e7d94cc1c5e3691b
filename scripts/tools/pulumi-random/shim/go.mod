// The upstream provider's constructor lives in its internal/provider package, which only code under
// github.com/terraform-providers/terraform-provider-random/ may import. This small module sits at
// that path (replaced by ./shim in ../go.mod) and hands the provider to our main package.
module github.com/terraform-providers/terraform-provider-random/shim

go 1.25.11

require (
	github.com/hashicorp/terraform-plugin-framework v1.19.0
	github.com/terraform-providers/terraform-provider-random v1.3.2-0.20260513075824-f8d869dc98d9
)
