# Decision-log masking (OPA config `decision_logs.mask_decision: /system/log/mask`): API keys,
# authorization headers and sandbox tokens never reach a decision log, and neither does the
# query string (a caller may put a key there; the policy never reads it).
#
# This file is NOT in the bundle: OPA loads it from its own file at start (outside the bundle's
# roots), so masking works even when the bundle is missing, corrupt or still loading.
package system.log

# Headers that carry a key, a token or a session: removed from the log.
removed_headers := {"x-api-key", "authorization", "x-agentd-sandbox-token", "cookie", "proxy-authorization"}

# Headers whose values are logged. Every other header is logged by name only, with its value
# replaced: a caller may put a key in any header (api-key, x-auth-token, a typo). The proxies
# send OPA only the headers the policy reads (ext_authz allowed_headers); this is the second
# line, for any other client of the policy.
logged_headers := {
	":authority", ":method", ":path", ":scheme", "host",
	"accept", "accept-encoding", "content-length", "content-type", "te", "user-agent",
	"grpc-timeout", "x-request-id", "x-forwarded-for", "x-forwarded-proto",
	"x-envoy-external-address", "x-envoy-internal",
}

mask contains concat("/", ["/input/attributes/request/http/headers", h]) if some h in removed_headers

mask contains "/input/parsed_query"

mask contains "/input/attributes/request/http/query"

# The mask policy gets the whole decision event as input: the request is under input.input.
http := input.input.attributes.request.http

headers := object.get(http, "headers", {})

# The path is kept for debugging, without its query.
mask contains {"op": "upsert", "path": "/input/attributes/request/http/path", "value": without_query(http.path)} if {
	contains(http.path, "?")
}

mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers/:path", "value": without_query(http.headers[":path"])} if {
	contains(http.headers[":path"], "?")
}

# Any header outside both lists: the headers are logged with its value masked. (Removals run
# before upserts; the value leaves the removed headers out, so the order does not matter.)
mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers", "value": masked_headers} if {
	some name, _ in headers
	not name in logged_headers
	not name in removed_headers
}

masked_headers[name] := logged_value(name, value) if {
	some name, value in headers
	not name in removed_headers
}

logged_value(name, value) := without_query(value) if {
	name == ":path"
} else := value if {
	name in logged_headers
} else := "[masked]"

without_query(p) := split(p, "?")[0]
