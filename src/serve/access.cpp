#include "serve/access.h"

#include <algorithm>
#include <cctype>
#include <string_view>

namespace chainlm {

bool is_loopback_host(const std::string& host) {
  std::string h = host;
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
  if (h == "localhost" || h == "::1" || h == "[::1]") return true;
  // 127.0.0.0/8 written as a dotted quad.
  if (h.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char c : h) {
    if (c == '.') ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return dots == 3;
}

std::string host_of_host_header(const std::string& host_header) {
  if (!host_header.empty() && host_header[0] == '[') {  // [v6]:port
    const size_t close = host_header.find(']');
    return close == std::string::npos ? host_header : host_header.substr(1, close - 1);
  }
  const size_t colon = host_header.find(':');
  return colon == std::string::npos ? host_header : host_header.substr(0, colon);
}

// The scheme's name is case-insensitive (RFC 7235: "bearer KEY" is the same); the key is not.
constexpr std::string_view kBearer = "bearer ";

bool starts_with_bearer(const std::string& authorization) {
  if (authorization.size() < kBearer.size()) return false;
  for (size_t i = 0; i < kBearer.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kBearer[i]) return false;
  return true;
}

bool bearer_matches(const std::string& authorization, const std::string& key) {
  // (The scheme is no secret; the key is compared in constant time.)
  if (key.empty() || authorization.size() != kBearer.size() + key.size() ||
      !starts_with_bearer(authorization))
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < key.size(); ++i)
    diff |= static_cast<unsigned char>(authorization[kBearer.size() + i] ^ key[i]);
  return diff == 0;
}

std::string preflight_allowed_headers(const std::string& requested) {
  // Header names are tokens (RFC 9110): letters, digits and !#$%&'*+-.^_`|~, separated by commas.
  const bool plain = std::all_of(requested.begin(), requested.end(), [](unsigned char c) {
    return std::isalnum(c) || c == ',' || c == ' ' ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
  std::string allowed = "Authorization, Content-Type";
  if (plain && !requested.empty() && requested.size() <= 1024) allowed += ", " + requested;
  return allowed;
}

bool route_needs_key(const std::string& path) {
  return path != "/" && path != "/health";
}

OriginCheck check_origin(const AccessPolicy& policy, const std::string& origin, const std::string& host_header) {
  if (origin.empty()) return OriginCheck::kNone;
  if (!host_header.empty() && (origin == "http://" + host_header || origin == "https://" + host_header))
    return OriginCheck::kSameOrigin;
  for (const std::string& allowed : policy.cors_origins)
    if (allowed == "*" || allowed == origin) return OriginCheck::kAllowed;
  return OriginCheck::kRefused;
}

bool valid_content_length(const std::string& value) {
  if (value.empty() || value.size() > 18) return false;
  return std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace chainlm
