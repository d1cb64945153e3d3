#include "serve/completion_request.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/json_document.h"
#include "core/json_excerpt.h"
#include "core/number_format.h"
#include "infer/chain_schedule.h"

namespace chainlm {

namespace {

using nlohmann::json;

[[noreturn]] void refuse(const std::string& param, const std::string& message) {
  throw RequestError(param, message);
}

// A field that is absent or null takes its default.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

long long integer(const json& v, const char* name) {
  if (const auto n = whole_number(v)) return *n;
  refuse(name, cat(name, " must be an integer (got ", json_excerpt(v),
                   v.is_number_float() && std::isfinite(v.get<double>()) &&
                           v.get<double>() == std::floor(v.get<double>())
                       ? ", too large to be one"
                       : "",
                   ")"));
}

double number(const json& v, const char* name) {
  if (!v.is_number()) refuse(name, cat(name, " must be a number (got ", json_excerpt(v), ")"));
  return v.get<double>();
}

// OpenAI fields chainlm accepts only with the value that asks for what it does anyway.
void check_openai_field(const std::string& name, const json& v) {
  if (name == "model" || name == "user") {
    if (!v.is_string()) refuse(name, cat(name, " must be a string"));
  } else if (name == "suffix") {
    refuse(name, cat(name, " is not supported (must be null or absent)"));
  } else if (name == "stream_options") {
    if (!v.is_object()) refuse(name, "stream_options must be an object");
    for (const auto& [key, value] : v.items()) {
      if (key != "include_usage")
        refuse("stream_options." + key, cat("stream_options.", key, " is not supported"));
      if (!value.is_boolean())
        refuse("stream_options.include_usage",
               "stream_options.include_usage must be true or false");
    }
  }
}

bool is_openai_field(const std::string& name) {
  for (const char* f : {"model", "user", "best_of", "suffix", "stream_options"})
    if (name == f) return true;
  return false;
}

bool is_chainlm_field(const std::string& name) {
  for (const char* f : {"prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "chains",
                        "chain_schedule", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
                        "echo", "ignore_eos", "n"})
    if (name == f) return true;
  return false;
}

}  // namespace

std::optional<long long> whole_number(const json& v) {
  if (v.is_number_integer()) {
    // (An unsigned integer past 2^63 - 1 is no long long.)
    if (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t)INT64_MAX) return std::nullopt;
    return v.get<long long>();
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740992.0)
      return (long long)d;
  }
  return std::nullopt;
}

CompletionRequest parse_completion_request(const json& body, const ModelConfig& config,
                                           int token_ids) {
  const int ids = token_ids > 0 ? std::min(token_ids, config.vocab_size) : config.vocab_size;
  // Why ids end below the model's rows, when they do.
  const std::string padding = ids < config.vocab_size ? cat("; the model's rows past ", ids - 1,
                                                            " are padding no token has")
                                                      : std::string();
  if (!body.is_object()) refuse("", "the request body must be a JSON object");
  for (const auto& [name, value] : body.items()) {
    if (is_chainlm_field(name)) continue;
    if (!is_openai_field(name)) refuse(name, cat("unknown field '", name, "'"));
    if (!value.is_null()) check_openai_field(name, value);
  }

  CompletionRequest r;
  r.gen.max_tokens = 16;
  r.gen.sampling.temperature = 1.0f;

  const json* v = field(body, "prompt");
  if (!v) refuse("prompt", "prompt is required");
  // A prompt of token ids (BOS is put first, as for text, unless it starts with BOS); `where`
  // names it in messages.
  auto token_prompt = [&](const json& list, const std::string& where) {
    PromptInput p;
    if (list.empty()) refuse("prompt", cat(where, " is an empty list of token ids"));
    for (size_t i = 0; i < list.size(); ++i) {
      const json& t = list.at(i);
      const auto id = whole_number(t);
      if (!id || *id < 0 || *id >= ids)
        refuse("prompt",
               cat(where, "[", i, "] must be a token id in 0..", ids - 1, " (got ", json_excerpt(t),
                   t.is_number_float() && !id ? ", not an integer" : "", padding, ")"));
      p.tokens.push_back((int)*id);
    }
    // The length is the server's to check: it knows whether the list brings its own BOS.
    return p;
  };
  const char* kPromptForms =
      "prompt must be a string, a list of token ids, or a list of prompts (strings, or lists of token ids)";
  if (v->is_string()) {
    r.prompts.push_back({v->get<std::string>(), {}});
  } else if (v->is_array() && !v->empty() && v->at(0).is_number()) {
    r.prompts.push_back(token_prompt(*v, "prompt"));
  } else if (v->is_array() && !v->empty()) {
    for (size_t i = 0; i < v->size(); ++i) {
      const json& p = v->at(i);
      if (p.is_string())
        r.prompts.push_back({p.get<std::string>(), {}});
      else if (p.is_array())
        r.prompts.push_back(token_prompt(p, cat("prompt[", i, "]")));
      else
        refuse("prompt", cat(kPromptForms, "; prompt[", i, "] is ", json_excerpt(p)));
    }
  } else {
    refuse("prompt", v->is_array() ? "prompt is an empty list" : kPromptForms);
  }
  if ((v = field(body, "n"))) {
    const long long n = integer(*v, "n");
    if (n < 1 || n > kMaxChoices) refuse("n", cat("n must be in 1..", kMaxChoices, " (got ", n, ")"));
    r.n = (int)n;
  }
  if ((v = field(body, "best_of")) && whole_number(*v) != r.n)
    refuse("best_of", cat("best_of must equal n (", r.n, "): chainlm returns every choice it generates"));
  if ((long long)r.prompts.size() * r.n > kMaxChoices)
    refuse(r.n > 1 ? "n" : "prompt", cat(r.prompts.size(), " prompts x n ", r.n, " = ", r.prompts.size() * r.n,
                                         " choices; a request may ask for at most ", kMaxChoices));
  if ((v = field(body, "ignore_eos"))) {  // llama.cpp's name: generate max_tokens, EOS or not
    if (!v->is_boolean()) refuse("ignore_eos", "ignore_eos must be true or false");
    r.gen.stop_at_eos = !v->get<bool>();
  }
  if ((v = field(body, "echo"))) {
    if (!v->is_boolean()) refuse("echo", "echo must be true or false");
    r.echo = v->get<bool>();
  }

  if ((v = field(body, "max_tokens"))) {
    const long long m = integer(*v, "max_tokens");
    if (m < 0 || m > config.max_seq_len)
      refuse("max_tokens", cat("max_tokens must be in 0..", config.max_seq_len,
                               " (the model's max_seq_len; got ", m, ")"));
    r.gen.max_tokens = (int)m;
  }
  if ((v = field(body, "temperature"))) {
    const double t = number(*v, "temperature");
    // Held as a float: 1e300 would overflow the conversion (undefined behaviour).
    if (!(t >= 0) || !(t <= std::numeric_limits<float>::max()))
      refuse("temperature",
             cat("temperature must be >= 0 and within float range (got ", json_excerpt(*v), ")"));
    r.gen.sampling.temperature = (float)t;
  }
  if ((v = field(body, "top_p"))) {
    const double p = number(*v, "top_p");
    if (!(p > 0 && p <= 1))
      refuse("top_p", cat("top_p must be in (0, 1] (got ", json_excerpt(*v), ")"));
    // Held as a float: below its smallest (1e-300) it read 0, which the sampler refused as a 500.
    // Any mass that small keeps the likeliest token alone, as the smallest float does.
    r.gen.sampling.top_p = std::max((float)p, std::numeric_limits<float>::denorm_min());
  }
  if ((v = field(body, "top_k"))) {
    const long long k = integer(*v, "top_k");
    if (k < 0) refuse("top_k", cat("top_k must be >= 0 (got ", k, "; 0 = off)"));
    r.gen.sampling.top_k = (int)std::min<long long>(k, config.vocab_size);
  }
  if ((v = field(body, "seed"))) {
    // Past 2^63 only as an integer; a whole number written as 5.0 up to 2^53 (whole_number).
    const auto n = whole_number(*v);
    if (!v->is_number_unsigned() && !(n && *n >= 0))
      refuse("seed", cat("seed must be an integer in 0..2^64-1 (got ", json_excerpt(*v), ")"));
    r.gen.sampling.seed = v->is_number_unsigned() ? v->get<uint64_t>() : (uint64_t)*n;
    r.seed_given = true;
  }
  if ((v = field(body, "stop"))) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4)
        refuse("stop", cat("stop takes at most 4 sequences (got ", v->size(), ")"));
      for (const json& s : *v) {
        if (!s.is_string()) refuse("stop", "stop must be a string or a list of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      refuse("stop", "stop must be a string or a list of strings");
    }
    for (const std::string& s : r.stop)
      if (s.empty()) refuse("stop", "stop sequences must not be empty");
  }
  for (const char* penalty : {"presence_penalty", "frequency_penalty"})
    if ((v = field(body, penalty))) {
      const double p = number(*v, penalty);
      if (!(p >= -2 && p <= 2)) refuse(penalty, cat(penalty, " must be in [-2, 2] (got ", json_excerpt(*v), ")"));
      (std::string(penalty) == "presence_penalty" ? r.gen.sampling.presence_penalty
                                                  : r.gen.sampling.frequency_penalty) = (float)p;
    }
  if ((v = field(body, "logit_bias"))) {
    // {"token id": bias}: keys are strings in JSON.
    if (!v->is_object()) refuse("logit_bias", "logit_bias must be an object of token id -> bias");
    for (const auto& [key, bias] : v->items()) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      // Digits alone: stoll read past a leading space or '+' (" 5" passed, "5 " did not).
      const bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) {
        return ch >= '0' && ch <= '9';
      });
      if (!digits || used != key.size() || id < 0 || id >= ids)
        refuse("logit_bias", cat("logit_bias key '", key, "' must be a token id in 0..", ids - 1,
                                 padding.empty() ? "" : cat(" (", padding.substr(2), ")")));
      const double b = bias.is_number() ? bias.get<double>() : NAN;
      if (!(b >= -100 && b <= 100))
        refuse("logit_bias", cat("logit_bias of token ", key, " must be a number in [-100, 100] (got ",
                                 json_excerpt(bias), ")"));
      // "5" and "05" are one token: which bias is meant cannot be told.
      for (const auto& [seen, unused] : r.gen.sampling.logit_bias)
        if (seen == id)
          refuse("logit_bias", cat("logit_bias names token ", id, " twice (as '", key, "' too)"));
      r.gen.sampling.logit_bias.emplace_back((int)id, (float)b);
    }
  }
  if ((v = field(body, "logprobs"))) {
    const long long n = integer(*v, "logprobs");
    if (n < 0 || n > kMaxTopLogprobs)
      refuse("logprobs", cat("logprobs must be in 0..", kMaxTopLogprobs, " (alternatives per token; got ", n, ")"));
    r.logprobs = (int)n;
  }
  if ((v = field(body, "stream"))) {
    if (!v->is_boolean()) refuse("stream", "stream must be true or false");
    r.stream = v->get<bool>();
  }
  // Checked among the OpenAI fields (check_openai_field): include_usage is its only key.
  if ((v = field(body, "stream_options"))) {
    r.include_usage = v->value("include_usage", false);
    if (r.include_usage && !r.stream)
      refuse("stream_options", "stream_options is only for stream: true");
  }
  const int n = config.n_chains();
  const json* chains = field(body, "chains");
  const json* schedule = field(body, "chain_schedule");
  if (chains && schedule) refuse("chain_schedule", "pass chains or chain_schedule, not both");
  if (chains) {
    const long long k = integer(*chains, "chains");
    if (k < 1 || k > n)
      refuse("chains", cat("chains must be in 1..", n, " (the model has ", count_of(n, "chain"),
                           "; got ", k, ")"));
    r.gen.chains = (int)k;
  }
  if (schedule) {
    if (!schedule->is_string())
      refuse("chain_schedule", "chain_schedule must be a string such as \"1:16,4\"");
    r.chain_schedule = schedule->get<std::string>();
    if (r.chain_schedule.empty()) refuse("chain_schedule", "chain_schedule must not be empty");
    try {
      r.gen.schedule = ChainSchedule::parse(r.chain_schedule, n);
    } catch (const Error& e) {
      // ChainSchedule's messages start "chain schedule: ..." or "chain schedule '...': ...".
      std::string why = e.what();
      for (const std::string prefix : {"chain schedule: ", "chain schedule "})
        if (why.rfind(prefix, 0) == 0) {
          why = why.substr(prefix.size());
          break;
        }
      refuse("chain_schedule", cat("chain_schedule: ", why));
    }
  }
  return r;
}

CompletionRequest parse_completion_body(const std::string& body, const ModelConfig& config,
                                        int token_ids) {
  return parse_completion_request(parse_json_body(body), config, token_ids);
}

json parse_json_body(const std::string& body) {
  json j;
  std::string duplicate, last_key;
  try {
    j = parse_json_noting_duplicates(body, &duplicate, &last_key);
  } catch (const json::parse_error& e) {
    // The byte where parsing stopped, not the library's internal wording; and what is wrong
    // there when it is about a string's characters, which look like no syntax error.
    const std::string what = e.what();
    const char* about = what.find("ill-formed UTF-8") != std::string::npos
                            ? ": a string is not valid UTF-8"
                        : what.find("surrogate") != std::string::npos
                            ? ": a string has an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)"
                        : what.find("control character") != std::string::npos
                            ? ": a string holds a raw control character (a newline or tab must be "
                              "written \\n or \\t)"
                            : ": error";
    refuse("", e.byte > body.size()
                   ? cat("the request body is not valid JSON: it ends too early (", body.size(),
                         " bytes)")
                   : cat("the request body is not valid JSON", about, " near byte ", e.byte));
  } catch (const json::out_of_range&) {
    // 1e400 is JSON by its grammar; what it is too large for is a double. The field it was
    // given for is named (its value checks name 1e40 alike).
    const std::string field = last_key.size() > 80 ? "" : last_key;
    refuse(
        field,
        field.empty()
            ? std::string(
                  "the request body holds a number too large for a double (beyond about 1.8e308)")
            : cat("'", field, "' is a number too large for a double (beyond about 1.8e308)"));
  } catch (const json::exception&) {
    refuse("", "the request body is not valid JSON");
  }
  // A field given twice took its last value silently ({"max_tokens": 1, "max_tokens": 2} ran
  // 2): refused, as unknown fields are.
  if (!duplicate.empty())
    refuse(duplicate.size() > 80 ? "" : duplicate,
           cat("the request body gives '",
               duplicate.size() > 80 ? duplicate.substr(0, 80) + "..." : duplicate,
               "' twice in one object; which value is meant cannot be told"));
  return j;
}

}  // namespace chainlm
