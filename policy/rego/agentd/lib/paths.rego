# Request paths as the policy sees them: without query or fragment, percent-decoded, with `//`,
# `.` and `..` resolved. Mirrors policy/paths.ts (normalizePath); the tests hold both to the
# same cases. Encoded slashes and backslashes are refused: decoding them would change which
# segments the path has.
package agentd.lib.paths

# normalize(raw) is {"ok": true, "path": "/a/b", "segments": ["a", "b"]} or {"ok": false}.
normalize(raw) := {"ok": true, "path": concat("", ["/", concat("/", segs)]), "segments": segs} if {
	path := split(split(raw, "?")[0], "#")[0]
	startswith(path, "/")
	not regex.match(`(?i)%(2f|5c)|\\`, path)

	# urlquery.decode is query decoding ("+" is a space): protect literal "+" first.
	decoded := urlquery.decode(replace(path, "+", "%2B"))
	not regex.match(`[\x00-\x1f\x7f]`, decoded)
	parts := [s | some s in split(decoded, "/"); s != ""; s != "."]
	segs := resolve(parts)
} else := {"ok": false}

# Without "..", the parts are the segments.
resolve(parts) := parts if {
	not ".." in parts
}

# With "..": refuse to climb above the root; a segment survives unless a later ".." takes the
# depth below the depth it was added at.
resolve(parts) := [parts[i] |
	some i
	parts[i] != ".."
	every k in numbers.range(i + 1, count(parts)) {
		depth(parts, k) >= depth(parts, i + 1)
	}
] if {
	".." in parts
	every k in numbers.range(1, count(parts)) {
		depth(parts, k) >= 0
	}
}

# Depth after the first k parts.
depth(parts, k) := count([1 | some i; parts[i] != ".."; i < k]) - count([1 | some i; parts[i] == ".."; i < k])

# matches(segments, pattern): pattern as shipped in the bundle, {"segments": [...], "prefix": bool}.
matches(segments, pattern) if {
	not pattern.prefix
	count(segments) == count(pattern.segments)
	segments_match(segments, pattern.segments)
}

matches(segments, pattern) if {
	pattern.prefix
	count(segments) >= count(pattern.segments)
	segments_match(segments, pattern.segments)
}

segments_match(segments, want) if {
	every i, w in want {
		segment_matches(segments[i], w)
	}
}

segment_matches(_, "*")

segment_matches(s, w) if {
	w != "*"
	s == w
}
