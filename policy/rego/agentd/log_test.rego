package agentd.log_test

import data.agentd.log

test_masks_secrets if {
	"/input/attributes/request/http/headers/x-api-key" in log.mask
	"/input/attributes/request/http/headers/authorization" in log.mask
	"/input/attributes/request/http/headers/x-agentd-sandbox-token" in log.mask
}
