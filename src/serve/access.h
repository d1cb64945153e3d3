#pragma once
// Who may use `chainlm serve` (docs/serving.md, "Access"): an API key, the browser origins
// allowed (CORS), and the defences of a server bound to loopback against web pages. The rules
// are plain functions of the request's headers so the tests can check them one by one.
//
// - With an API key, every route but the playground page and /health needs
//   `Authorization: Bearer KEY` (401 otherwise; the key is compared in constant time).
// - A browser sends `Origin` with cross-site requests. A request whose Origin is neither the
//   server's own (the page it served) nor one of --cors-origin is refused (403): that stops any
//   web page from starting generations on a local server with a text/plain POST, which needs no
//   CORS preflight. Requests without Origin (curl, the openai client) are not browsers' and pass.
// - Bound to a loopback address, the server answers only requests whose Host is a loopback
//   name (localhost, 127.0.0.1, [::1]): a page whose own name is made to resolve to 127.0.0.1
//   (DNS rebinding) would otherwise be "same origin".
#include <string>
#include <vector>

namespace chainlm {

struct AccessPolicy {
  std::string api_key;                    // empty: no key needed
  std::vector<std::string> cors_origins;  // origins allowed cross-site; "*" allows any
  bool loopback_only = false;             // bound to a loopback address: check Host
};

// Whether host (an address to bind, or a Host header's name without port) is loopback.
bool is_loopback_host(const std::string& host);

// The host part of a Host header value: "localhost:8080" -> "localhost", "[::1]:80" -> "::1".
std::string host_of_host_header(const std::string& host_header);

// Whether `authorization` is "Bearer <key>" for this key, the scheme in any case (constant time
// in the key's length).
bool bearer_matches(const std::string& authorization, const std::string& key);
// Whether an Authorization header's scheme is Bearer (case-insensitive), whatever follows.
bool starts_with_bearer(const std::string& authorization);

// Access-Control-Allow-Headers for a preflight that asks to send `requested` (its
// Access-Control-Request-Headers): Authorization and Content-Type, and the requested names when
// they are plain header names.
std::string preflight_allowed_headers(const std::string& requested);

// Whether a route needs the API key: all but the page and /health.
bool route_needs_key(const std::string& path);

enum class OriginCheck {
  kNone,         // no Origin header: not a browser's cross-site request
  kSameOrigin,   // the server's own page
  kAllowed,      // a --cors-origin: answered with Access-Control-Allow-Origin
  kRefused,
};
OriginCheck check_origin(const AccessPolicy& policy, const std::string& origin, const std::string& host_header);

// A Content-Length header's value is a decimal number of bytes (or absent).
bool valid_content_length(const std::string& value);

}  // namespace chainlm
