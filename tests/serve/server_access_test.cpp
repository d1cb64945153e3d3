// Who may use the server (serve/access.h) and how it holds up against malformed or hostile
// requests: the API key, browser origins (CORS) and DNS rebinding, body limits for every
// encoding, a port already in use.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve/access.h"
#include "serve/serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::connect_loopback;
using testing::ServerUnderTest;
using testing::TempDir;

TEST(Access, LoopbackHostsAndHostHeaders) {
  for (const char* h : {"localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"})
    EXPECT_TRUE(is_loopback_host(h)) << h;
  for (const char* h : {"0.0.0.0", "192.168.1.2", "evil.example", "127.0.0.1.evil.example", "127.0.0", "", "::"})
    EXPECT_FALSE(is_loopback_host(h)) << h;
  EXPECT_EQ(host_of_host_header("localhost:8080"), "localhost");
  EXPECT_EQ(host_of_host_header("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(host_of_host_header("[::1]:80"), "::1");
}

TEST(Access, BearerKeyMustMatchExactly) {
  // The scheme's name in any case (RFC 7235); the key exactly.
  for (const char* h : {"Bearer s3cret", "bearer s3cret", "BEARER s3cret"})
    EXPECT_TRUE(bearer_matches(h, "s3cret")) << h;
  for (const char* h : {"", "Bearer ", "Bearer s3cre", "Bearer s3crett", "Bearer S3cret",
                        "Basic s3cret", "Bearer  s3cret", "s3cret"})
    EXPECT_FALSE(bearer_matches(h, "s3cret")) << h;
  EXPECT_FALSE(bearer_matches("Bearer ", ""));  // no key configured: nothing matches
  EXPECT_FALSE(route_needs_key("/"));
  EXPECT_FALSE(route_needs_key("/health"));
  for (const char* p : {"/v1/completions", "/v1/models", "/metrics", "/anything"}) EXPECT_TRUE(route_needs_key(p)) << p;
}

TEST(Access, OriginsAndContentLengths) {
  AccessPolicy none;
  EXPECT_EQ(check_origin(none, "", "127.0.0.1:8080"), OriginCheck::kNone);
  EXPECT_EQ(check_origin(none, "http://127.0.0.1:8080", "127.0.0.1:8080"), OriginCheck::kSameOrigin);
  EXPECT_EQ(check_origin(none, "http://evil.example", "127.0.0.1:8080"), OriginCheck::kRefused);
  EXPECT_EQ(check_origin(none, "null", "127.0.0.1:8080"), OriginCheck::kRefused);  // file:// pages, sandboxes
  AccessPolicy app{.api_key = "", .cors_origins = {"https://app.example"}, .loopback_only = true};
  EXPECT_EQ(check_origin(app, "https://app.example", "127.0.0.1:8080"), OriginCheck::kAllowed);
  EXPECT_EQ(check_origin(app, "https://app.example.evil", "127.0.0.1:8080"), OriginCheck::kRefused);
  AccessPolicy any{.api_key = "", .cors_origins = {"*"}, .loopback_only = false};
  EXPECT_EQ(check_origin(any, "https://anyone.example", "h:1"), OriginCheck::kAllowed);
  for (const char* v : {"0", "17", "1048576"}) EXPECT_TRUE(valid_content_length(v)) << v;
  for (const char* v : {"", "-5", "+5", "5 ", "0x10", "1e3", "99999999999999999999"})
    EXPECT_FALSE(valid_content_length(v)) << v;
}

class ServeAccess : public ::testing::Test {
 protected:
  void SetUp() override {
    model = dir.file("air");
    testing::write_tiny_model(model, true);
  }
  static ServeOptions one_thread() {
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    return o;
  }
  TempDir dir;
  std::string model;
};

const char* kBody = R"({"prompt": "x", "max_tokens": 2})";

long generations(const ServerUnderTest& s) {
  auto r = s.client().Get("/metrics");
  if (!r || r->status != 200) return -1;
  const std::string name = "\nchainlm_generations_total ";
  const size_t at = r->body.find(name);
  return at == std::string::npos ? -1 : std::stol(r->body.substr(at + name.size()));
}

TEST_F(ServeAccess, ApiKeyGuardsEveryRouteButThePageAndHealth) {
  ServeOptions o = one_thread();
  o.api_key = "k3y-for-tests";
  ServerUnderTest s(model, o);
  auto c = s.client();
  auto no_key = c.Post("/v1/completions", kBody, "application/json");
  ASSERT_TRUE(no_key);
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(no_key->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(json::parse(no_key->body)["error"]["type"], "authentication_error");
  EXPECT_NE(no_key->body.find("this server needs an API key"), std::string::npos) << no_key->body;
  for (const char* path : {"/v1/models", "/metrics"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << path;
  }
  auto wrong = c.Post("/v1/completions", {{"Authorization", "Bearer k3y-for-test"}}, kBody, "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  // Each mistake says which it is, and the key sent is not repeated back.
  EXPECT_NE(wrong->body.find("the API key sent is not this server's key"), std::string::npos)
      << wrong->body;
  EXPECT_EQ(wrong->body.find("k3y-for-test"), std::string::npos) << wrong->body;
  auto basic = c.Post("/v1/completions", {{"Authorization", "Basic dXNlcjpwYXNz"}}, kBody,
                      "application/json");
  ASSERT_TRUE(basic);
  EXPECT_EQ(basic->status, 401);
  EXPECT_NE(basic->body.find("not of the form 'Bearer KEY'"), std::string::npos) << basic->body;
  for (const char* path : {"/", "/health"}) {
    auto r = c.Get(path);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << path;
  }
  c.set_bearer_token_auth("k3y-for-tests");
  auto ok = c.Post("/v1/completions", kBody, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  // Refusals are counted like other errors.
  EXPECT_NE(metrics->body.find("code=\"401\""), std::string::npos) << metrics->body;
}

TEST_F(ServeAccess, WebPagesOfOtherOriginsCannotGenerate) {
  ServerUnderTest s(model, one_thread());
  auto c = s.client();
  const long before = generations(s);
  ASSERT_GE(before, 0);
  // What any web page can send without a CORS preflight: a text/plain POST, with its Origin.
  auto csrf = c.Post("/v1/completions", {{"Origin", "http://evil.example"}}, kBody, "text/plain");
  ASSERT_TRUE(csrf);
  EXPECT_EQ(csrf->status, 403);
  EXPECT_NE(json::parse(csrf->body)["error"]["message"].get<std::string>().find("--cors-origin http://evil.example"),
            std::string::npos);
  EXPECT_EQ(csrf->get_header_value("Access-Control-Allow-Origin"), "");
  EXPECT_EQ(generations(s), before);  // nothing was generated
  // The server's own page (same origin) and clients that are not browsers (no Origin) pass;
  // a body sent as curl -d sends it (form-encoded, past httplib's 8 KB form limit) is JSON all
  // the same.
  const std::string own = "http://127.0.0.1:" + std::to_string(s.port);
  auto page = c.Post("/v1/completions", {{"Origin", own}}, kBody, "application/json");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200) << page->body;
  json big = json::parse(kBody);
  big["stop"] = std::vector<std::string>(3, std::string(4000, 's'));
  auto curl = c.Post("/v1/completions", big.dump(), "application/x-www-form-urlencoded");
  ASSERT_TRUE(curl);
  EXPECT_EQ(curl->status, 200) << curl->body;
  // A preflight from another origin is refused too.
  auto pre = c.Options("/v1/completions", {{"Origin", "http://evil.example"},
                                           {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->status, 403);
}

TEST_F(ServeAccess, CorsOriginIsAllowedAndPreflightAnswered) {
  ServeOptions o = one_thread();
  o.cors_origins = {"https://app.example"};
  ServerUnderTest s(model, o);
  auto c = s.client();
  auto pre = c.Options("/v1/completions", {{"Origin", "https://app.example"},
                                           {"Access-Control-Request-Method", "POST"},
                                           {"Access-Control-Request-Headers", "authorization,content-type"}});
  ASSERT_TRUE(pre);
  EXPECT_EQ(pre->status, 204);
  EXPECT_EQ(pre->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_NE(pre->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  EXPECT_NE(pre->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  EXPECT_EQ(pre->headers.count("Vary"), 1u);  // one Vary naming both (two were sent)
  EXPECT_EQ(pre->get_header_value("Vary"), "Origin, Access-Control-Request-Headers");
  // The headers a page asks to send are allowed (the openai npm client adds X-Stainless-* ones,
  // which a fixed list made the browser refuse); what is not a list of header names is not echoed.
  auto stainless = c.Options("/v1/chat/completions",
                             {{"Origin", "https://app.example"},
                              {"Access-Control-Request-Method", "POST"},
                              {"Access-Control-Request-Headers", "content-type,x-stainless-os"}});
  ASSERT_TRUE(stainless);
  EXPECT_EQ(stainless->status, 204);
  EXPECT_NE(stainless->get_header_value("Access-Control-Allow-Headers").find("x-stainless-os"),
            std::string::npos);
  EXPECT_EQ(preflight_allowed_headers("x-a;b=\"c\""), "Authorization, Content-Type");
  // OPTIONS without an Origin is no preflight: what the server allows, not a CORS refusal.
  auto plain = c.Options("/v1/completions");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 204);
  EXPECT_EQ(plain->get_header_value("Allow"), "GET, POST, OPTIONS");
  EXPECT_EQ(plain->get_header_value("Access-Control-Allow-Origin"), "");
  auto r = c.Post("/v1/completions", {{"Origin", "https://app.example"}}, kBody, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Access-Control-Allow-Origin"), "https://app.example");
  EXPECT_EQ(r->get_header_value("Vary"), "Origin");
  auto other = c.Post("/v1/completions", {{"Origin", "https://other.example"}}, kBody, "application/json");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 403);
}

// DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1 is "same origin"
// with itself; its requests carry Host: evil.example.
TEST_F(ServeAccess, LoopbackServerAnswersOnlyLoopbackHostNames) {
  ServerUnderTest s(model, one_thread());
  const std::string port = std::to_string(s.port);
  auto c = s.client();
  auto rebound = c.Post("/v1/completions",
                        {{"Host", "evil.example:" + port}, {"Origin", "http://evil.example:" + port}}, kBody,
                        "application/json");
  ASSERT_TRUE(rebound);
  EXPECT_EQ(rebound->status, 403);
  EXPECT_NE(rebound->body.find("evil.example"), std::string::npos);
  auto local = c.Get("/health", {{"Host", "localhost:" + port}});
  ASSERT_TRUE(local);
  EXPECT_EQ(local->status, 200);
}

// Sends raw bytes over one connection and returns what comes back until the server closes it
// (an idle connection: after the keep-alive timeout) or 10 s pass. (A half-closed connection
// counts as gone for httplib, which then drops the answer: the write side stays open.)
std::string raw_exchange(int port, const std::string& request, size_t* sent_bytes = nullptr) {
  const int fd = connect_loopback(port);
  if (fd < 0) return "";
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (413): what it answered is still read
    sent += (size_t)n;
  }
  if (sent_bytes) *sent_bytes = sent;
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, (size_t)n);
  ::close(fd);
  return out;
}

TEST_F(ServeAccess, MalformedAndOversizedBodiesGetClearErrors) {
  ServeOptions o = one_thread();
  o.max_body_bytes = 4096;
  ServerUnderTest s(model, o);
  // A chunked body over the limit: 413 before it is all buffered, and the connection closes.
  std::string chunked =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  const std::string piece(1000, ' ');
  for (int i = 0; i < 20; ++i) chunked += "3e8\r\n" + piece + "\r\n";
  chunked += "0\r\n\r\n";
  std::string answer = raw_exchange(s.port, chunked);
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 200);
  EXPECT_NE(answer.find("--max-body-bytes 4096"), std::string::npos);
  // The connection ends after it: the unread body was read as requests (its chunks as request
  // lines), one answer each, and /metrics counted them as 400s and 414s.
  EXPECT_EQ(answer.find("HTTP/1.1", 1), std::string::npos)
      << "one answer only: " << answer.substr(0, 600);
  const std::string metrics = s.client().Get("/metrics")->body;
  EXPECT_EQ(metrics.find("route=\"other\""), std::string::npos) << metrics;
  // A declared body over the limit sent in one go (python's http.client, no Expect): the server
  // closed with it unread, the client's writes met a reset (python's raised a broken pipe and
  // never read the 413). It is read to its end now, and dropped.
  const std::string big(8 << 20, 'x');
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
      "Content-Type: application/json\r\nContent-Length: " +
      std::to_string(big.size()) + "\r\n\r\n" + big;
  size_t sent = 0;
  answer = raw_exchange(s.port, request, &sent);
  EXPECT_EQ(sent, request.size()) << "the client's writes failed";
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer.substr(0, 200);
  // A chunked body within the limit is served.
  const std::string body = kBody;
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  answer = raw_exchange(s.port, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n" +
                                    std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer.substr(0, 300);
  // A negative Content-Length gets an answer (it used to hold the connection), and the
  // connection is not kept alive after it.
  answer = raw_exchange(s.port, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n{}");
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer.substr(0, 200);
  EXPECT_NE(answer.find("Content-Length '-5' is not a length"), std::string::npos) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
}

// A POST with neither Content-Length nor chunks has an empty body (RFC 9112 6.3): it was read
// "until the client closes", held 10 s and answered 400 "could not be read to its end"; on a
// path with no route, 400 "not HTTP the server can read" instead of 404.
TEST_F(ServeAccess, ABodyLessPostIsAnsweredAsEmpty) {
  ServerUnderTest s(model, one_thread());
  std::string answer = raw_exchange(
      s.port, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer.substr(0, 300);
  EXPECT_EQ(answer.find("could not be read to its end"), std::string::npos) << answer;
  EXPECT_NE(answer.find("not valid JSON"), std::string::npos) << answer;
  for (const char* method : {"POST", "PUT", "PATCH", "DELETE"}) {
    answer = raw_exchange(
        s.port,
        std::string(method) + " /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(answer.rfind("HTTP/1.1 404", 0), 0u) << method << ": " << answer.substr(0, 300);
    EXPECT_NE(answer.find(std::string("no route ") + method + " /nowhere"), std::string::npos)
        << answer;
  }
  // With a body declared, it is not read: the connection closes after the 404.
  answer = raw_exchange(s.port,
                        "POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(answer.rfind("HTTP/1.1 404", 0), 0u) << answer.substr(0, 300);
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("Keep-Alive"), std::string::npos) << "it said both: " << answer;
}

// An operator had nothing to grep after an incident: no line per request. With the log on (as
// `chainlm serve` has it), each request answered is one line: time, client, method and target as
// sent (the query too) with control bytes and invalid UTF-8 escaped, status and duration. (The
// decoded path was logged: no query, and %FF went in as a raw 0xFF byte; a user trial.)
TEST_F(ServeAccess, EachRequestIsOneLineOfTheLog) {
  ServeOptions o = one_thread();
  o.request_log = true;
  ::testing::internal::CaptureStderr();
  {
    ServerUnderTest s(model, o);
    EXPECT_EQ(s.client().Get("/health")->status, 200);
    EXPECT_EQ(s.client().Post("/v1/completions", kBody, "application/json")->status, 200);
    EXPECT_EQ(s.client().Get("/x%01y")->status, 404);
    EXPECT_EQ(s.client().Get("/v1/models?foo=bar")->status, 200);
    raw_exchange(s.port, "GET /v1/models/\xff\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    raw_exchange(s.port, "GARBAGE\r\n\r\n");  // no peer known to cpp-httplib: "-" (it was ":-1")
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 6) << log;
  // No time was taken: "-" alone (it read "- ms").
  EXPECT_NE(log.find("Z - \"GARBAGE \" 400 -\n"), std::string::npos) << log;
  EXPECT_NE(log.find(" 127.0.0.1:"), std::string::npos) << log;
  EXPECT_NE(log.find(" \"GET /health\" 200 "), std::string::npos) << log;
  EXPECT_NE(log.find(" \"POST /v1/completions\" 200 "), std::string::npos) << log;
  EXPECT_NE(log.find(" \"GET /x%01y\" 404 "), std::string::npos) << log;
  EXPECT_NE(log.find(" \"GET /v1/models?foo=bar\" 200 "), std::string::npos) << log;
  EXPECT_NE(log.find(" \"GET /v1/models/\\xff\\x01\" 404 "), std::string::npos) << log;
  EXPECT_EQ(log.find('\x01'), std::string::npos) << "control bytes escaped";
  EXPECT_EQ(log.find('\xff'), std::string::npos) << "invalid UTF-8 escaped";
  EXPECT_EQ(log.substr(0, 2), "20") << log;  // an ISO 8601 time first
}

// A model name that is not UTF-8 text (the default is the --model file's name, whose bytes may
// be anything): /health answered 500 for ever, /metrics had a raw 0xFF in a label (a scrape
// Prometheus refuses), a newline split the start line (a user trial). Refused, escaped in the
// message; names of other scripts pass.
TEST_F(ServeAccess, TheModelNameMustBeUtf8TextWithoutControls) {
  for (const std::string& bad : {std::string("m\xffodel"), std::string("two\nlines")}) {
    ServeOptions o = one_thread();
    o.model_name = bad;
    try {
      ServerUnderTest s(model, o);
      ADD_FAILURE() << "served as " << bad;
    } catch (const Error& e) {
      EXPECT_TRUE(
          std::string(e.what()).find("(--name) must be UTF-8 text without control characters") !=
          std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(bad[0] == 'm' ? "'m\\xffodel'" : "'two\\x0alines'"),
                std::string::npos)
          << e.what();
    }
  }
  ServeOptions o = one_thread();
  o.model_name = "mod\xc3\xa8le \"q\"";
  ServerUnderTest s(model, o);
  auto health = s.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200) << health->body;
  EXPECT_EQ(s.health()["model"], o.model_name);
}

// HTTP/1.0 lets a client leave Host out (curl -0, ab): such a request is no rebound browser
// page, so a loopback server answers it (it got 403 "not for Host ''"). HTTP/1.1 requires
// Host: 400 without it, as RFC 9112 asks.
TEST_F(ServeAccess, HostHeaderOptionalInHttp10Only) {
  ServerUnderTest s(model, one_thread());
  std::string answer = raw_exchange(s.port, "GET /health HTTP/1.0\r\n\r\n");
  EXPECT_NE(answer.find(" 200 "), std::string::npos) << answer.substr(0, 300);
  answer = raw_exchange(
      s.port, std::string("POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                          "Content-Length: ") +
                  std::to_string(std::string(kBody).size()) + "\r\n\r\n" + kBody);
  EXPECT_NE(answer.find(" 200 "), std::string::npos) << answer.substr(0, 300);
  // Two Host headers: which one is meant cannot be told (the first was taken: a rebinding page
  // could put localhost first).
  answer =
      raw_exchange(s.port, "GET /health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n");
  EXPECT_NE(answer.find(" 400 "), std::string::npos) << answer.substr(0, 300);
  EXPECT_NE(answer.find("more than one Host header"), std::string::npos) << answer;
  // Two Content-Lengths: the rest of a body would be read as the next request.
  answer = raw_exchange(
      s.port, std::string("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                          "application/json\r\nContent-Length: 5\r\nContent-Length: ") +
                  std::to_string(std::string(kBody).size()) + "\r\n\r\n" + kBody);
  EXPECT_NE(answer.find(" 400 "), std::string::npos) << answer.substr(0, 300);
  EXPECT_NE(answer.find("more than one Content-Length header"), std::string::npos) << answer;
  // Not HTTP at all: a 400 that says what cpp-httplib could not read (it said "HTTP 400").
  answer = raw_exchange(s.port, "GARBAGE\r\n\r\n");
  EXPECT_NE(answer.find(" 400 "), std::string::npos) << answer.substr(0, 300);
  EXPECT_NE(answer.find("the request is not HTTP the server can read"), std::string::npos)
      << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;  // it closes it
  EXPECT_EQ(answer.find("Keep-Alive"), std::string::npos) << answer;
  answer = raw_exchange(s.port, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_NE(answer.find(" 400 "), std::string::npos) << answer.substr(0, 300);
  EXPECT_NE(answer.find("must carry a Host header"), std::string::npos) << answer;
}

// 200 connections that send nothing and 30 that send half a request each hold an HTTP thread;
// a real request must still be answered (it waited for idle ones to time out, ~20 s, when
// the pool had only sessions + queue + 4 threads).
TEST_F(ServeAccess, IdleAndSlowConnectionsDoNotStarveARealRequest) {
  ServerUnderTest s(model, one_thread());
  std::vector<int> held;
  for (int i = 0; i < 230; ++i) {
    const int fd = connect_loopback(s.port);
    ASSERT_GE(fd, 0) << i;
    held.push_back(fd);
    if (i >= 200) {
      const std::string partial = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
      ASSERT_GT(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), 0);
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // all of them accepted
  httplib::Client c("127.0.0.1", s.port);
  c.set_connection_timeout(5, 0);
  c.set_read_timeout(5, 0);
  auto r = c.Post("/v1/completions", kBody, "application/json");
  for (int fd : held) ::close(fd);
  ASSERT_TRUE(r) << "no answer within 5 s: " << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeAccess, ASecondServerOnTheSamePortFailsNamingIt) {
  ServerUnderTest first(model, one_thread());
  ServeOptions o = one_thread();
  o.host = "127.0.0.1";
  o.port = first.port;
  InferenceServer second(*first.model, *first.tokenizer, o);
  try {
    second.start();
    ADD_FAILURE() << "a second server started on port " << first.port;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(":" + std::to_string(first.port) + ": the port is in use"),
              std::string::npos)
        << e.what();
  }
  // `chainlm serve` finds it before it loads the model (it was found after the whole load), and
  // tells an address of another machine apart.
  EXPECT_THROW(check_can_listen("127.0.0.1", first.port), Error);
  try {
    check_can_listen("192.0.2.1", 18000);  // TEST-NET-1: no address of this machine
    ADD_FAILURE() << "listened on an address of no interface";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("192.0.2.1 is not an address of this machine"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(check_can_listen("127.0.0.1", 0));
  // A port out of range is named as such (-5 was "127.0.0.1 is not an address", a user trial).
  for (int port : {-5, 70000}) {
    try {
      check_can_listen("127.0.0.1", port);
      ADD_FAILURE() << "listened on port " << port;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--port must be in 0..65535 (got " +
                                           std::to_string(port) + ")"),
                std::string::npos)
          << e.what();
    }
  }
  // The first one still answers.
  auto r = first.client().Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServeAccess, ServeCommandWarnsWithoutAKeyBeyondLoopbackAndReadsTheKeyFromTheEnvironment) {
  const std::vector<std::string> args = {"--model", model, "--port", "0", "--threads", "1", "--host", "0.0.0.0"};
  testing::Spawned open = testing::spawn_serve(dir, args, {});
  ASSERT_GT(open.port, 0) << testing::read_bytes(dir.file("serve.err"));
  testing::stop(open);
  const std::string warned = testing::read_bytes(dir.file("serve.err"));
  EXPECT_NE(warned.find("warning: listening on 0.0.0.0, reachable from other machines, without an API key"),
            std::string::npos)
      << warned;

  testing::Spawned keyed = testing::spawn_serve(dir, args, {"CHAINLM_API_KEY=from-the-env"});
  ASSERT_GT(keyed.port, 0) << testing::read_bytes(dir.file("serve.err"));
  httplib::Client c("127.0.0.1", keyed.port);
  auto refused = c.Post("/v1/completions", kBody, "application/json");
  c.set_bearer_token_auth("from-the-env");
  auto served = c.Post("/v1/completions", kBody, "application/json");
  testing::stop(keyed);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401);
  ASSERT_TRUE(served);
  EXPECT_EQ(served->status, 200) << served->body;
  EXPECT_EQ(testing::read_bytes(dir.file("serve.err")).find("warning"), std::string::npos);

  // An empty key (--api-key "$KEY" with KEY unset) served without authentication: refused.
  for (const std::string& how : {std::string("CHAINLM_API_KEY= "), std::string("")}) {
    const std::string cmd = "env -u CHAINLM_API_KEY " + how + "timeout 30 '" + CHAINLM_BINARY +
                            "' serve --model '" + model + "' --port 0 --threads 1" +
                            (how.empty() ? " --api-key ''" : "") + " >/dev/null 2>'" +
                            dir.file("empty.err") + "'";
    const int status = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << how << status;
    EXPECT_NE(testing::read_bytes(dir.file("empty.err")).find("the API key is empty"),
              std::string::npos)
        << testing::read_bytes(dir.file("empty.err"));
  }
}

}  // namespace
}  // namespace chainlm
