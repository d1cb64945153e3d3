// The playground page in headless Chromium, driven over WebDriver (chromedriver speaks plain
// HTTP + JSON, so httplib is the client): type a prompt, generate with 1 chain and with all
// chains, check the streamed output and the runs table, and save a screenshot to
// <build dir>/playground.png. Skips only when Debian's chromium or chromium-driver is missing
// (scripts/setup.sh installs both).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "serve_test_util.h"

extern char** environ;

namespace chainlm {
namespace {

using nlohmann::json;

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    const std::string candidate = dir + "/" + name;
    if (!dir.empty() && access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string base64_decode(const std::string& in) {
  std::string out(in.size() / 4 * 3 + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), (int)in.size());
  if (n < 0) return "";
  size_t pad = 0;
  while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
  out.resize((size_t)n - pad);
  return out;
}

// chromedriver on a free port, ended (with the browser it started) when this goes away.
class ChromeDriver {
 public:
  ChromeDriver(const std::string& binary, const std::string& log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<std::string> args = {binary, "--port=0"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ) != 0) pid_ = 0;
    posix_spawn_file_actions_destroy(&actions);
    const std::string marker = "started successfully on port ";
    for (int i = 0; i < 1000 && pid_ > 0 && port == 0; ++i) {
      const std::string text = testing::read_bytes(log);
      const size_t at = text.find(marker);
      if (at != std::string::npos && text.find('\n', at) != std::string::npos)
        port = std::atoi(text.c_str() + at + marker.size());
      else
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~ChromeDriver() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
  }
  int port = 0;

 private:
  pid_t pid_ = 0;
};

// A WebDriver session (W3C protocol); deleting it closes the browser.
class Browser {
 public:
  Browser(int driver_port, const json& capabilities) : http_("127.0.0.1", driver_port) {
    http_.set_read_timeout(60, 0);
    const json r = call("POST", "/session", {{"capabilities", capabilities}});
    id_ = r.value("sessionId", "");
  }
  ~Browser() {
    if (!id_.empty()) http_.Delete("/session/" + id_);
  }
  bool ok() const { return !id_.empty(); }
  const std::string& error() const { return error_; }

  json command(const std::string& method, const std::string& path,
               const json& body = json::object()) {
    return call(method, "/session/" + id_ + path, body);
  }
  std::string element(const std::string& css) {
    const json e = command("POST", "/element", {{"using", "css selector"}, {"value", css}});
    return e.is_object() ? e.value("element-6066-11e4-a52e-4f735466cecf", "") : "";
  }
  json script(const std::string& js) {
    return command("POST", "/execute/sync", {{"script", js}, {"args", json::array()}});
  }
  // Polls a script until it returns true.
  bool wait_until(const std::string& js, double seconds = 20) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (script(js) == true) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  json call(const std::string& method, const std::string& path, const json& body) {
    httplib::Result r = method == "GET"    ? http_.Get(path)
                        : method == "POST" ? http_.Post(path, body.dump(), "application/json")
                                           : http_.Delete(path);
    if (!r) {
      error_ = method + " " + path + ": " + httplib::to_string(r.error());
      return nullptr;
    }
    const json j = json::parse(r->body, nullptr, false);
    if (r->status != 200)
      error_ =
          method + " " + path + ": " + std::to_string(r->status) + " " + r->body.substr(0, 500);
    return j.is_object() && j.contains("value") ? j["value"] : json(nullptr);
  }

  httplib::Client http_;
  std::string id_, error_;
};

// WebDriver capabilities of a headless Chromium with its profile in dir, quiet on the network.
json headless_chromium(const std::string& chromium, const testing::TempDir& dir) {
  return {{"alwaysMatch",
           {{"browserName", "chrome"},
            {"goog:chromeOptions",
             {{"binary", chromium},
              {"args",
               {"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--user-data-dir=" + dir.file("chromium-profile")}}}}}}};
}

// Headless Chromium, driven through chromedriver, on the page of the server at `port`:
// ok() once both have started and the page is requested.
struct Page {
  Page(const std::string& chromium, const std::string& driver, const testing::TempDir& dir, int port)
      : chromedriver(driver, dir.file("chromedriver.log")),
        browser(chromedriver.port, headless_chromium(chromium, dir)) {
    if (browser.ok()) browser.command("POST", "/url", {{"url", "http://127.0.0.1:" + std::to_string(port) + "/"}});
  }
  bool ok() const { return chromedriver.port > 0 && browser.ok(); }
  ChromeDriver chromedriver;
  Browser browser;
};

// A 3-chain CoLM-Air model with a 128-token context served on one session, and its page.
struct AirPage {
  static std::string write_model(const testing::TempDir& dir) {
    testing::write_tiny_model(dir.file("air"), true, 128);
    return dir.file("air");
  }
  static ServeOptions one_session() {
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    return o;
  }
  AirPage(const std::string& chromium, const std::string& driver)
      : server(write_model(dir), one_session()), page(chromium, driver, dir, server.port) {}
  // Whether the browser started and the page has loaded the model's description.
  ::testing::AssertionResult loaded() {
    if (!page.ok())
      return ::testing::AssertionFailure() << testing::read_bytes(dir.file("chromedriver.log"))
                                           << page.browser.error();
    if (!page.browser.wait_until("return document.getElementById('chains').max === '3';"))
      return ::testing::AssertionFailure() << "the page did not load the model: " << page.browser.error();
    return ::testing::AssertionSuccess();
  }
  testing::TempDir dir;
  testing::ServerUnderTest server;
  Page page;
};

TEST(Playground, GeneratesWithOneChainAndAllChainsInHeadlessChromium) {
  const std::string chromium = find_in_path("chromium"), driver = find_in_path("chromedriver");
  if (chromium.empty() || driver.empty()) {
    std::printf(
        "[playground] skipped: %s not found (Debian packages chromium and chromium-driver; "
        "scripts/setup.sh installs them)\n",
        chromium.empty() ? "chromium" : "chromedriver");
    GTEST_SKIP() << "chromium or chromedriver is not installed";
  }
  testing::TempDir dir;
  const std::string run_dir = testing::write_trained_model(dir);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  o.model_name = "tiny-colm-air";
  testing::ServerUnderTest s(run_dir, o);

  Page page(chromium, driver, dir, s.port);
  ASSERT_TRUE(page.ok()) << testing::read_bytes(dir.file("chromedriver.log")) << page.browser.error();
  Browser& browser = page.browser;
  ASSERT_TRUE(browser.wait_until("return document.getElementById('chains').max === '3';"))
      << "the page did not load the model: " << browser.error();
  EXPECT_EQ(browser.script("return document.getElementById('model').textContent;")
                .get<std::string>()
                .rfind("tiny-colm-air", 0),
            0u);

  const std::string prompt_box = browser.element("#prompt"), slider = browser.element("#chains"),
                    run = browser.element("#run");
  ASSERT_FALSE(prompt_box.empty() || slider.empty() || run.empty()) << browser.error();
  const std::string prompt = "the small model";
  browser.command("POST", "/element/" + prompt_box + "/value", {{"text", prompt}});
  // A fixed seed: the page's default is a random one, which may sample the end of text first.
  browser.script("document.getElementById('seed').value = '1';");
  EXPECT_EQ(browser.script("return document.getElementById('prompt').value;"), prompt);

  // Home and End keys move the slider to 1 chain and to all chains.
  for (const auto& [key, chains] :
       std::vector<std::pair<std::string, int>>{{"\xee\x80\x91", 1}, {"\xee\x80\x90", 3}}) {
    SCOPED_TRACE("chains " + std::to_string(chains));
    browser.command("POST", "/element/" + slider + "/value", {{"text", key}});
    ASSERT_EQ(browser.script("return document.getElementById('chains').value;"),
              std::to_string(chains));
    const int rows_before =
        browser.script("return document.querySelectorAll('#runs tr').length;").get<int>();
    browser.command("POST", "/element/" + run + "/click");
    ASSERT_TRUE(browser.wait_until("return document.querySelectorAll('#runs tr').length === " +
                                   std::to_string(rows_before + 1) + ";"))
        << "status: " << browser.script("return document.getElementById('status').textContent;");
    EXPECT_EQ(browser.script("return document.getElementById('status').dataset.state;"), "done");
    const std::string output =
        browser.script("return document.getElementById('output').textContent;");
    EXPECT_EQ(output.rfind(prompt, 0), 0u) << output;
    EXPECT_GT(output.size(), prompt.size()) << "no generated text";
    // Every streamed token is tagged with the chains that produced it.
    const json tags = browser.script(
        "return [...document.querySelectorAll('#output span[data-chains]')].map(s => "
        "s.dataset.chains);");
    ASSERT_FALSE(tags.empty());
    for (const auto& t : tags) EXPECT_EQ(t, std::to_string(chains));
    EXPECT_EQ(browser.script("return document.querySelector('#runs tr td').textContent;"),
              std::to_string(chains));
    const std::string status =
        browser.script("return document.getElementById('status').textContent;");
    EXPECT_NE(status.find("tokens/s"), std::string::npos) << status;
  }
  // The comparison button runs every sub-model in turn.
  browser.command("POST", "/element/" + browser.element("#compare") + "/click");
  ASSERT_TRUE(browser.wait_until("return document.querySelectorAll('#runs tr').length === 5;"));

  const json shot = browser.command("GET", "/screenshot");
  ASSERT_TRUE(shot.is_string()) << browser.error();
  const std::string png = base64_decode(shot.get<std::string>());
  ASSERT_EQ(png.substr(1, 3), "PNG");
  const std::string path = std::string(CHAINLM_BUILD_DIR) + "/playground.png";
  std::ofstream(path, std::ios::binary).write(png.data(), (std::streamsize)png.size());
  std::printf("[playground] screenshot: %s (%zu bytes)\n", path.c_str(), png.size());
  EXPECT_EQ(s.health()["sessions_in_flight"], 0);
}

// With --api-key the page asks for the key, then sends it with every call.
TEST(Playground, AsksForTheApiKeyAndSendsIt) {
  const std::string chromium = find_in_path("chromium"), driver = find_in_path("chromedriver");
  if (chromium.empty() || driver.empty()) GTEST_SKIP() << "chromium or chromedriver is not installed";
  testing::TempDir dir;
  testing::write_tiny_model(dir.file("air"), true);
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  o.api_key = "playground-key";
  testing::ServerUnderTest s(dir.file("air"), o);
  Page page(chromium, driver, dir, s.port);
  ASSERT_TRUE(page.ok()) << testing::read_bytes(dir.file("chromedriver.log")) << page.browser.error();
  Browser& browser = page.browser;
  ASSERT_TRUE(browser.wait_until(
      "return document.getElementById('model').textContent.includes('needs an API key');"))
      << browser.script("return document.getElementById('model').textContent;");
  const std::string key_box = browser.element("#api-key");
  ASSERT_FALSE(key_box.empty()) << browser.error();
  // A wrong key is said to be wrong, and Generate says what is missing instead of doing nothing.
  browser.command("POST", "/element/" + key_box + "/value", {{"text", "wrong-key"}});
  browser.script("document.getElementById('api-key').dispatchEvent(new Event('change'));");
  ASSERT_TRUE(browser.wait_until(
      "return document.getElementById('model').textContent.includes(\"not this server's key\");"))
      << browser.script("return document.getElementById('model').textContent;");
  browser.command("POST", "/element/" + browser.element("#run") + "/click");
  ASSERT_TRUE(
      browser.wait_until("return document.getElementById('status').dataset.state === 'error';"));
  EXPECT_NE(browser.script("return document.getElementById('status').textContent;")
                .get<std::string>()
                .find("API key"),
            std::string::npos);
  browser.command("POST", "/element/" + key_box + "/clear");
  browser.command("POST", "/element/" + key_box + "/value", {{"text", "playground-key"}});
  browser.script("document.getElementById('api-key').dispatchEvent(new Event('change'));");
  ASSERT_TRUE(browser.wait_until("return document.getElementById('chains').max === '3';"))
      << browser.script("return document.getElementById('model').textContent;");
  browser.command("POST", "/element/" + browser.element("#prompt") + "/value", {{"text", "hi"}});
  browser.command("POST", "/element/" + browser.element("#run") + "/click");
  ASSERT_TRUE(browser.wait_until("return document.getElementById('status').dataset.state === 'done';"))
      << browser.script("return document.getElementById('status').textContent;");
  EXPECT_EQ(browser.script("return document.getElementById('output').textContent;").get<std::string>().rfind("hi", 0),
            0u);
}

// Chat mode: the page keeps the conversation, sends it to /v1/chat/completions, and shows each
// reply as the API gives it for the same messages and settings.
TEST(Playground, ChatModeKeepsTheConversation) {
  const std::string chromium = find_in_path("chromium"), driver = find_in_path("chromedriver");
  if (chromium.empty() || driver.empty()) GTEST_SKIP() << "chromium or chromedriver is not installed";
  AirPage air(chromium, driver);
  ASSERT_TRUE(air.loaded());
  Browser& browser = air.page.browser;
  testing::ServerUnderTest& s = air.server;
  browser.script(
      "const m = document.getElementById('mode'); m.value = 'chat'; m.dispatchEvent(new "
      "Event('change'));"
      "document.getElementById('max-tokens').value = '12'; document.getElementById('seed').value = "
      "'1';");
  EXPECT_EQ(browser.script("return document.getElementById('run').textContent;"), "Send");
  EXPECT_EQ(browser.script("return document.getElementById('system-row').hidden;"), false);

  // What the API answers for these messages with the page's settings (seed 1, temperature 0.8,
  // top-k 40, all 3 chains).
  auto api_reply = [&](const json& messages) {
    const json body = {{"messages", messages}, {"max_tokens", 12}, {"seed", 1}, {"temperature", 0.8},
                       {"top_k", 40}, {"chains", 3}};
    auto r = s.client().Post("/v1/chat/completions", body.dump(), "application/json");
    EXPECT_TRUE(r && r->status == 200);
    return r ? json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>() : std::string();
  };
  auto turns = [&] {
    return browser.script(
        "return [...document.querySelectorAll('#output .turn')].map(t => [t.dataset.role, t.textContent]);");
  };
  json messages = json::array();
  for (const std::string message : {"hello", "and again"}) {
    SCOPED_TRACE(message);
    browser.command("POST", "/element/" + browser.element("#prompt") + "/value", {{"text", message}});
    browser.command("POST", "/element/" + browser.element("#run") + "/click");
    ASSERT_TRUE(browser.wait_until("return document.getElementById('status').dataset.state === 'done' && "
                                   "!document.getElementById('run').disabled;"))
        << browser.script("return document.getElementById('status').textContent;");
    messages.push_back({{"role", "user"}, {"content", message}});
    const std::string reply = api_reply(messages);
    messages.push_back({{"role", "assistant"}, {"content", reply}});
    json want = json::array();
    for (const json& m : messages) want.push_back({m["role"], m["content"]});
    EXPECT_EQ(turns(), want);
    EXPECT_EQ(browser.script("return document.getElementById('prompt').value;"), "");
  }
  browser.command("POST", "/element/" + browser.element("#new-chat") + "/click");
  EXPECT_EQ(turns(), json::array());
}

// What a user does while a request runs, and fields left empty or past JavaScript's integers.
TEST(Playground, KeepsEachRequestToWhatItWasAskedIn) {
  const std::string chromium = find_in_path("chromium"), driver = find_in_path("chromedriver");
  if (chromium.empty() || driver.empty())
    GTEST_SKIP() << "chromium or chromedriver is not installed";
  AirPage air(chromium, driver);
  ASSERT_TRUE(air.loaded());
  Browser& browser = air.page.browser;
  testing::ServerUnderTest& s = air.server;
  auto status = [&] {
    return browser.script("return document.getElementById('status').textContent;")
        .get<std::string>();
  };
  auto wait_idle = [&] {
    return browser.wait_until(
        "return !document.getElementById('run').disabled && "
        "document.getElementById('status').dataset.state !== 'running';");
  };

  // An empty Max tokens is refused in the page, naming it: no run, no request.
  browser.script(
      "document.getElementById('prompt').value = 'the cat';"
      "document.getElementById('max-tokens').value = '';");
  browser.command("POST", "/element/" + browser.element("#run") + "/click");
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(browser.script("return document.getElementById('status').dataset.state;"), "error");
  EXPECT_NE(status().find("Max tokens"), std::string::npos) << status();
  EXPECT_EQ(browser.script("return document.querySelectorAll('#runs tr').length;"), 0);

  // A seed above 2^53 reaches the server digit for digit (a JavaScript number would round it).
  browser.script(
      "document.getElementById('max-tokens').value = '4';"
      "document.getElementById('seed').value = '18446744073709551615';");
  browser.command("POST", "/element/" + browser.element("#run") + "/click");
  ASSERT_TRUE(wait_idle());
  EXPECT_NE(status().find("seed 18446744073709551615"), std::string::npos) << status();

  // Chat: while a reply streams the mode and the conversation cannot change, and what is typed
  // meanwhile stays in the box.
  browser.script(
      "const m = document.getElementById('mode'); m.value = 'chat'; m.dispatchEvent(new "
      "Event('change'));"
      "document.getElementById('prompt').value = 'hello';");
  const json locked = browser.script(
      "document.getElementById('run').click();"
      "document.getElementById('prompt').value = 'typed meanwhile';"
      "return [document.getElementById('mode').disabled, "
      "document.getElementById('new-chat').disabled];");
  EXPECT_EQ(locked, json::array({true, true}));
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(browser.script("return document.getElementById('status').dataset.state;"), "done")
      << status();
  EXPECT_EQ(browser.script("return document.getElementById('prompt').value;"), "typed meanwhile");
  EXPECT_EQ(browser.script("return [document.getElementById('mode').disabled, "
                           "document.getElementById('new-chat').disabled];"),
            json::array({false, false}));

  // A reply Stop cuts short stays in the conversation, after the one before it.
  browser.script(
      "document.getElementById('max-tokens').value = '100'; "
      "document.getElementById('prompt').value = 'stop';");
  browser.script(
      "document.getElementById('run').click(); setTimeout(() => "
      "document.getElementById('stop').click(), 0);");
  ASSERT_TRUE(wait_idle());
  EXPECT_EQ(browser.script("return document.getElementById('status').dataset.state;"), "stopped")
      << status();
  const json roles = browser.script(
      "return history.map(m => m.role + ':' + (m.role === 'user' ? m.content : ''));");
  EXPECT_EQ(roles, json::array({"user:hello", "assistant:", "user:stop", "assistant:"}));

  // "All sub-models" with the box empty answers the last message again, once per chain count,
  // without adding to the conversation.
  browser.script("document.getElementById('prompt').value = '';");
  const int rows =
      browser.script("return document.querySelectorAll('#runs tr').length;").get<int>();
  browser.command("POST", "/element/" + browser.element("#compare") + "/click");
  ASSERT_TRUE(browser.wait_until(
      "return document.querySelectorAll('#runs tr').length === " + std::to_string(rows + 3) +
      " && !document.getElementById('run').disabled;"))
      << status();
  const json user_turns = browser.script(
      "return [...document.querySelectorAll('#output .turn[data-role=user]')].map(t => "
      "t.textContent);");
  EXPECT_EQ(user_turns, json::array({"hello", "stop"}));
  EXPECT_EQ(browser.script("return history.length;"), 4);
  EXPECT_EQ(s.health()["sessions_in_flight"], 0);
}

}  // namespace
}  // namespace chainlm
