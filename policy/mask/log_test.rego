package system.log_test

import data.system.log

test_masks_secrets if {
	"/input/attributes/request/http/headers/x-api-key" in log.mask
	"/input/attributes/request/http/headers/authorization" in log.mask
	"/input/attributes/request/http/headers/x-agentd-sandbox-token" in log.mask
	"/input/parsed_query" in log.mask
}

test_strips_query_from_logged_path if {
	masks := log.mask with input as {"input": {"attributes": {"request": {"http": {"path": "/api/v1/status?api_key=secret", "headers": {":path": "/api/v1/status?api_key=secret"}}}}}}
	{"op": "upsert", "path": "/input/attributes/request/http/path", "value": "/api/v1/status"} in masks
	{"op": "upsert", "path": "/input/attributes/request/http/headers/:path", "value": "/api/v1/status"} in masks
}

test_no_upsert_without_query if {
	masks := log.mask with input as {"input": {"attributes": {"request": {"http": {"path": "/api/v1/status", "headers": {":path": "/api/v1/status"}}}}}}
	count({m | some m in masks; is_object(m)}) == 0
}

# A key sent in a header the policy does not read (api-key, x-auth-token, a typo) reached the
# decision log in plaintext: every header outside the logged list is logged by name only.
test_unknown_headers_masked if {
	masks := log.mask with input as {"input": {"attributes": {"request": {"http": {"path": "/a?k=s", "headers": {
		":path": "/a?k=s",
		"user-agent": "curl",
		"x-api-key": "k1",
		"api-key": "k2",
		"x-auth-token": "k3",
	}}}}}}
	{"op": "upsert", "path": "/input/attributes/request/http/headers", "value": {
		":path": "/a",
		"user-agent": "curl",
		"api-key": "[masked]",
		"x-auth-token": "[masked]",
	}} in masks
	"/input/attributes/request/http/headers/x-api-key" in masks
}

test_known_headers_logged_as_they_are if {
	masks := log.mask with input as {"input": {"attributes": {"request": {"http": {"path": "/a", "headers": {
		":path": "/a",
		"content-type": "application/json",
		"authorization": "Bearer k",
	}}}}}}
	count({m | some m in masks; is_object(m)}) == 0
	"/input/attributes/request/http/headers/authorization" in masks
}
