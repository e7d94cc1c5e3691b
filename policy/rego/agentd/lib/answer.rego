# The answers in the shape OPA's Envoy plugin reads (see envoy/authz.rego): gateway.rego and
# egress.rego answer in it directly, with no second rule to reshape their decisions.
package agentd.lib.answer

# A denial: the HTTP status, a JSON body with the reason's code and message, and the dynamic
# metadata for rate limiting and access logs.
deny(status, reason, message, metadata) := {
	"allowed": false,
	"http_status": status,
	"headers": {"content-type": "application/json"},
	"body": json.marshal({"error": {"code": reason, "message": message}}),
	"dynamic_metadata": metadata,
}
