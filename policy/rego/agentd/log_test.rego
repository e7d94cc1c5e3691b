package agentd.log_test

import data.agentd.log

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
