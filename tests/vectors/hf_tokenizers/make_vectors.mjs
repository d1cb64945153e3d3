// Regenerates the tokenizer.json files in this directory and vectors.json: small BPE
// tokenizers trained by Hugging Face's tokenizers (the Rust library, 0.22, through its Node
// binding @anush008/tokenizers), rewritten into the shapes today's models ship, and their
// encodings and decodings of a varied text set as that library produces them. The C++ reader
// (src/io/hf_tokenizer*.cpp) must give the same ids and text. @huggingface/tokenizers (an
// independent JavaScript port) encodes the same cases as a cross-check; disagreements are
// printed, not recorded.
//
//   cd tests/vectors/hf_tokenizers && npm install && npm run vectors
import rust from "@anush008/tokenizers";
import { Tokenizer as JsTokenizer } from "@huggingface/tokenizers";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const here = (name) => new URL(name, import.meta.url).pathname;

// The training text: English prose, code, numbers, CJK, emoji, accents, whitespace runs.
// Small on purpose: the files stay a few tens of kB.
const corpusParts = [
  "The chain of models splits every hidden vector into chains. Each layer lets chain i see only chains 1 to i.",
  "One trained model holds a family of nested sub-models; the first k chains are a smaller, faster model.",
  "It's what they'll say: we've done it, you're right, I'm sure, he'd know. DON'T SHOUT, it's LOUD.",
  "def forward(self, x):\n    h = self.norm(x)\n    return x + self.attn(h)  # residual\n",
  "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n\tif (sum > 1e-3) return -1;\r\n",
  "In 2024 the model read 1234567 tokens at 3.14159 tokens/s; 42 + 58 = 100.",
  "中文的句子也要切分。模型很大，机器很小。日本語のテキストもあります。한국어 문장입니다.",
  "Emoji: 🐈 🐈‍⬛ 👍🏽 🇫🇷 ❤️ — and symbols © ® ™ € £ ¥ ± × ÷ ≤ ≥ ∞.",
  "Café, naïve, résumé, Ångström, façade; combining: e\u0301 a\u0308 n\u0303; Ελληνικά, русский текст.",
  "   leading spaces, trailing spaces   \n\n\nthree newlines, tabs\t\tand  double  spaces.",
  "<html><body class=\"main\">Hello &amp; goodbye</body></html> https://example.com/path?q=1&r=2",
];
let corpus = "";
for (let r = 0; r < 12; ++r) corpus += corpusParts.map((p, i) => (r + i) % 3 ? p : p.toLowerCase()).join("\n") + "\n";

// Text cases. `hex` cases are raw bytes (invalid UTF-8 included): the text both libraries see
// is the bytes decoded with U+FFFD for each invalid sequence (WHATWG's rule, Rust's
// from_utf8_lossy), which the C++ side must reproduce from the same bytes.
const texts = [
  "", " ", "  ", "\n", "a", "Hello world", "Hello  world", " Hello world ", "hello\nworld\n",
  "The chain of models splits every hidden vector into chains.",
  "It's they'll we've you're I'm he'd IT'S THEY'LL WE'VE", "don't DON'T Don'T",
  "def forward(self, x):\n    h = self.norm(x)\n    return x + self.attn(h)\n",
  "\tif (sum > 1e-3) return -1;\r\n\r\n", "    \n\n    \t  x",
  "1 12 123 1234 12345 1234567890 3.14159 -42 1,000,000", "a1b22c333d4444",
  "中文的句子也要切分。", "日本語のテキスト", "한국어 문장", "Ελληνικά русский",
  "🐈 🐈‍⬛ 👍🏽 🇫🇷 ❤️", "a🐈b", "Café naïve e\u0301 a\u0308 n\u0303 \u0301 start",
  "symbols © ® ™ € £ ¥ ± × ÷ ≤ ≥ ∞ …", "ℌ𝔢𝔩𝔩𝔬 𝟙𝟚𝟛", "zero\u200bwidth nbsp\u00a0here ideographic\u3000space",
  "<html><body class=\"main\">Hello &amp; goodbye</body></html>", "https://example.com/path?q=1&r=2",
  "trailing spaces   ", "   ", "x\u0000y", "\u007f\u0085\u2028\u2029",
  "words that were never seen: zyzzyva quixotic xylophone",
  "<|begin_of_text|>Hello<|eot_id|>", "<s>Hi</s> <s> </s>", "<|im_start|>user\nHi<|im_end|>\n",
  "a<|eot_id|>b <|eot_id|> c", "<|endoftext|><|endoftext|>", "<|eot_id", "<unk> <0x41>",
  // Where PCRE2 and the Rust libraries' classes differ: U+180E (White_Space until Unicode 6.3,
  // still \s to PCRE2), joiners and marks (Rust's \w has them), other numbers (not Rust's \w).
  "a\u180eb", "x\u180e\u180ey \u180e", "\u{1F468}\u200d\u{1F469}\u200d\u{1F467} family", "नमस्ते दुनिया",
  "x² ½ Ⅻ", "a‿b c_d", "٣٤ ١٢", "zw\u200cnj",
  // Chat prompts as Llama-2's template renders them: text after <s> and </s> continues the input.
  "<s>[INST] Hi there [/INST]", "<s>[INST] Hi [/INST] Hello! </s><s>[INST] How are you? [/INST]",
];
const hexCases = ["ff", "61ff62", "c3", "e4b8", "f09f90", "80bf", "c0af", "eda080", "f4908080", "e4b8ade6", "68656c6c6fc3"];

// Ids to decode on their own: slices that cut a multi-byte character, specials in the middle.
const decodeSlices = [[0, 1], [1, 2], [0, 3], [2, 5]];

const byteLevelAlphabet = rust.byteLevelAlphabet();
const llama3Regex =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const workDir = mkdtempSync(join(tmpdir(), "chainlm-hf-vectors-"));
const corpusPath = join(workDir, "corpus.txt");
writeFileSync(corpusPath, corpus);

// The trainer's merges are deterministic but its ids are not (they follow hash-map order), so
// the vocabulary is renumbered canonically: the initial alphabet in code point order, then each
// merge's result in merge order. Same merges, same encodings up to the ids; files reproducible.
function train(preTokenizer) {
  const t = new rust.Tokenizer(rust.BPE.empty());
  t.setPreTokenizer(preTokenizer);
  t.train([corpusPath]);
  const path = join(workDir, "trained.json");
  t.save(path, false);
  const trained = JSON.parse(readFileSync(path, "utf8"));
  const merged = trained.model.merges.map(([a, b]) => a + b);
  const mergedSet = new Set(merged);
  const alphabet = Object.keys(trained.model.vocab).filter((tok) => !mergedSet.has(tok))
    .sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const vocab = {};
  for (const tok of alphabet.concat(merged)) if (!(tok in vocab)) vocab[tok] = Object.keys(vocab).length;
  trained.model.vocab = vocab;
  return trained;
}

function added(id, content, special = true, extra = {}) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special, ...extra };
}

// Byte-level BPE (GPT-2 alphabet) with every byte in the vocabulary, as released models have.
function byteLevelModel(trained, mergesAsStrings, ignoreMerges) {
  const vocab = { ...trained.model.vocab };
  let next = Object.keys(vocab).length;
  for (const ch of [...byteLevelAlphabet].sort()) if (!(ch in vocab)) vocab[ch] = next++;  // the binding returns them unordered
  const merges = trained.model.merges.map((m) => (mergesAsStrings ? m.join(" ") : m));
  return { model: { ...trained.model, vocab, merges, ignore_merges: ignoreMerges }, size: next };
}

const byteTrained = train(rust.byteLevelPreTokenizer(false, true));
const metaTrained = train(rust.metaspacePreTokenizer("▁", "always"));

const tokenizers = {};

// LLaMA-3: its split regex, byte-level without regex, ignore_merges, "a b" merges, specials.
{
  const { model, size } = byteLevelModel(byteTrained, true, true);
  const specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
  tokenizers.llama3 = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: specials.map((s, i) => added(size + i, s)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: llama3Regex }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
             { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [size], tokens: ["<|begin_of_text|>"] } },
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model,
  };
  tokenizers.llama3_config = {
    bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", add_bos_token: true,
    chat_template: "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}",
  };
}

// GPT-2 / SmolLM: digits one by one, then byte-level with the GPT-2 regex; pair merges.
{
  const { model, size } = byteLevelModel(byteTrained, false, false);
  const specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
  tokenizers.gpt2 = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: specials.map((s, i) => added(size + i, s)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Digits", individual_digits: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      ],
    },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model,
  };
  tokenizers.gpt2_config = { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>", unk_token: "<|endoftext|>" };
}

// GPT-2 with added tokens that carry single_word, lstrip and rstrip (chat fine-tunes add such
// tokens): where a single_word token may match is decided by Rust's regex \w (letters, marks,
// decimal digits, connector punctuation, joiners) on either side.
{
  const base = tokenizers.gpt2, size = base.added_tokens.at(-1).id + 1;
  tokenizers.gpt2_added = {
    ...base,
    added_tokens: base.added_tokens.concat([
      added(size, "[SW]", true, { single_word: true }),
      added(size + 1, "<word>", false, { single_word: true }),
      added(size + 2, "<L>", true, { lstrip: true }),
      added(size + 3, "<R>", true, { rstrip: true }),
      added(size + 4, "<LR>", true, { lstrip: true, rstrip: true, single_word: true }),
    ]),
  };
  tokenizers.gpt2_added_config = tokenizers.gpt2_config;
}
const addedTexts = [
  "[SW]", "a [SW] b", "a[SW] b", "a [SW]b", "x[SW]", "[SW]x", "_[SW]", "[SW]_", "1[SW]", "[SW]9",
  "\u0663[SW]", "\u00b2[SW]", "[SW]\u00b2", "\u2162[SW]", "e\u0301[SW]", "[SW]\u0301", "\u203f[SW]",
  "[SW]\u203f", "\u200d[SW]", "[SW]\u200c", "-[SW]-", "\u00e9[SW]", "[SW]\u4e2d", "\u4e2d[SW]",
  "<word>", "a <word> b", "a<word>", "<word>s", "[SW][SW]", "[SW] [SW]",
  "a   <L>b", "a<L>", "  <L>", "a<R>   b", "<R>\n\nx", "a <LR> b", "a  <LR>  b", "a<LR> b",
  "<L><R> <LR>", "\t<L>\u3000<R>\u00a0x",
];
// Byte-level BPE after tokenizers' Whitespace pre-tokenizer (Rust regex \w+|[^\w\s]+, the
// whitespace removed) or WhitespaceSplit (char::is_whitespace), as BERT-era and custom files have.
for (const type of ["Whitespace", "WhitespaceSplit"]) {
  const name = type === "Whitespace" ? "whitespace" : "whitespace_split";
  tokenizers[name] = {
    ...tokenizers.gpt2,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [{ type }, { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }],
    },
  };
  tokenizers[`${name}_config`] = tokenizers.gpt2_config;
}
// SentencePiece-style BPE as the LLaMA-2/TinyLlama conversions write it: <unk> <s> </s>, the
// 256 byte tokens <0xXX>, then the pieces; byte fallback; "▁" for spaces. Two generations of
// the converter: a Prepend+Replace normalizer (legacy), or a Metaspace pre-tokenizer.
function sentencePieceModel() {
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; ++b) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  let next = 259;
  for (const [piece] of Object.entries(metaTrained.model.vocab).sort((a, b) => a[1] - b[1]))
    if (!(piece in vocab)) vocab[piece] = next++;
  return {
    type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab,
    merges: metaTrained.model.merges.map((m) => m.join(" ")),
  };
}
const spAdded = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")];
const spDecoder = {
  type: "Sequence",
  decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 },
  ],
};
tokenizers.sp_legacy = {
  version: "1.0", truncation: null, padding: null, added_tokens: spAdded,
  normalizer: {
    type: "Sequence",
    normalizers: [{ type: "Prepend", prepend: "▁" }, { type: "Replace", pattern: { String: " " }, content: "▁" }],
  },
  pre_tokenizer: null, post_processor: null, decoder: spDecoder, model: sentencePieceModel(),
};
tokenizers.sp_legacy_config = { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" };
tokenizers.sp_metaspace = {
  version: "1.0", truncation: null, padding: null, added_tokens: spAdded, normalizer: null,
  pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
  post_processor: null,
  decoder: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
  model: sentencePieceModel(),
};
tokenizers.sp_metaspace_config = {
  bos_token: { content: "<s>", lstrip: false, normalized: false, rstrip: false, single_word: false },
  eos_token: "</s>",
};
// Metaspace that splits on "▁" and prepends always, with an <unk> and no byte fallback: the
// characters the vocabulary lacks become <unk>, fused.
tokenizers.sp_split_unk = {
  ...tokenizers.sp_metaspace,
  pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
  decoder: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true },
  model: { ...sentencePieceModel(), byte_fallback: false },
};
tokenizers.sp_split_unk_config = { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" };
// Metaspace's "first" scheme after a normalizer that strips the text: tokenizers prepends "▁"
// only to a piece that starts at the input's offset 0, which a stripped leading space moves.
tokenizers.sp_strip_first = {
  ...tokenizers.sp_metaspace,
  normalizer: { type: "Strip", strip_left: true, strip_right: true },
};
tokenizers.sp_strip_first_config = tokenizers.sp_metaspace_config;

const names = ["llama3", "gpt2", "gpt2_added", "whitespace", "whitespace_split", "sp_legacy", "sp_metaspace",
               "sp_split_unk", "sp_strip_first"];
const cases = [];
let disagreements = 0;
for (const name of names) {
  const json = JSON.stringify(tokenizers[name]);
  writeFileSync(here(`${name}.tokenizer.json`), json + "\n");
  writeFileSync(here(`${name}.tokenizer_config.json`), JSON.stringify(tokenizers[`${name}_config`], null, 1) + "\n");
  const tok = rust.Tokenizer.fromString(json);
  const js = new JsTokenizer(tokenizers[name], tokenizers[`${name}_config`]);
  const inputs = texts.concat(name === "gpt2_added" ? addedTexts : []).map((text) => ({ text }))
    .concat(hexCases.map((hex) => ({ hex, text: new TextDecoder().decode(Buffer.from(hex, "hex")) })));
  for (const input of inputs) {
    const enc = await tok.encode(input.text, null, { addSpecialTokens: false });
    const ids = Array.from(enc.getIds());
    const decoded = await tok.decode(ids, true);
    const c = { tokenizer: name, ids, decoded };
    if (input.hex !== undefined) c.hex = input.hex; else c.text = input.text;
    cases.push(c);
    const jsIds = js.encode(input.text, { add_special_tokens: false }).ids;
    if (JSON.stringify(jsIds) !== JSON.stringify(ids)) {
      ++disagreements;
      console.log(`${name}: the JS port disagrees on ${JSON.stringify(input.text)}: ${JSON.stringify(jsIds)} vs ${JSON.stringify(ids)}`);
    }
    for (const [a, b] of decodeSlices) {
      if (ids.length < b) continue;
      const slice = ids.slice(a, b);
      cases.push({ tokenizer: name, decode: slice, decoded: await tok.decode(slice, true) });
    }
  }
  const specialId = tokenizers[name].added_tokens.at(-1).id;
  for (const ids of [[specialId], [5, specialId, 6], [specialId + 1000]]) {
    let decoded = null;
    try { decoded = await tok.decode(ids, true); } catch (e) { decoded = null; }
    cases.push({ tokenizer: name, decode: ids, decoded });
  }
}
// BPE with a continuing_subword_prefix ("##", as WordPiece-style BPE files have): a merge's
// second token carries the prefix and its result does not ("t" + "##h" makes "th"). The
// vocabulary is built here by hand (the binding's trainer takes no prefix); encodings only, of
// letters and spaces (chainlm reads no decoder that removes the prefix).
{
  const vocab = {};
  const add = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  for (const l of "abcdefghijklmnopqrstuvwxyz".split("")) { add(l); add("##" + l); }
  const merges = [];
  for (const w of ["the", "hello", "world", "chain", "model", "split", "it", "tokens"]) {
    let parts = w.split("").map((c, i) => (i ? "##" + c : c));
    while (parts.length > 1) {
      const m = parts[0] + parts[1].slice(2);
      if (!merges.includes(parts[0] + " " + parts[1])) merges.push(parts[0] + " " + parts[1]);
      add(m);
      parts = [m, ...parts.slice(2)];
    }
  }
  const size = Object.keys(vocab).length;
  const tokenizer = {
    version: "1.0", truncation: null, padding: null, added_tokens: [added(size, "</s>")], normalizer: null,
    pre_tokenizer: { type: "Whitespace" }, post_processor: null, decoder: null,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "##", end_of_word_suffix: null,
             fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
  writeFileSync(here("bpe_prefix.tokenizer.json"), JSON.stringify(tokenizer) + "\n");
  writeFileSync(here("bpe_prefix.tokenizer_config.json"), JSON.stringify({ eos_token: "</s>" }, null, 1) + "\n");
  const tok = rust.Tokenizer.fromString(JSON.stringify(tokenizer));
  for (const text of ["the hello world", "thechain", "modelsplit it", "hellohello", "the tokens", "chains models",
                      "it it  it", "split the world of tokens", "helloworld the", "xyz"]) {
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    cases.push({ tokenizer: "bpe_prefix", text, ids: Array.from(enc.getIds()) });
  }
}
writeFileSync(here("vectors.json"),
  JSON.stringify({ generator: "tokenizers 0.22.2 (@anush008/tokenizers 0.6.0)", cases }, null, 0).replace(/\},\{/g, "},\n{") + "\n");
console.log(`wrote ${cases.length} cases for ${names.length} tokenizers; the JS port disagreed on ${disagreements}`);
