# Decision-log masking (OPA config `decision_logs.mask_decision: /agentd/log/mask`): API keys,
# authorization headers and sandbox tokens never reach a decision log, and neither does the
# query string (a caller may put a key there; the policy never reads it).
package agentd.log

mask contains "/input/attributes/request/http/headers/x-api-key"

mask contains "/input/attributes/request/http/headers/authorization"

mask contains "/input/attributes/request/http/headers/x-agentd-sandbox-token"

mask contains "/input/attributes/request/http/headers/cookie"

mask contains "/input/attributes/request/http/headers/proxy-authorization"

mask contains "/input/parsed_query"

mask contains "/input/attributes/request/http/query"

# The mask policy gets the whole decision event as input: the request is under input.input.
http := input.input.attributes.request.http

# The path is kept for debugging, without its query.
mask contains {"op": "upsert", "path": "/input/attributes/request/http/path", "value": without_query(http.path)} if {
	contains(http.path, "?")
}

mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers/:path", "value": without_query(http.headers[":path"])} if {
	contains(http.headers[":path"], "?")
}

without_query(p) := split(p, "?")[0]
