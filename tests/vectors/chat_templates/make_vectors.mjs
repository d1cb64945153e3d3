// Regenerates vectors.json: each chat template family's Jinja template (as the model cards'
// tokenizer_config.json ship it; "plain" is chainlm's own for base models) rendered by
// @huggingface/jinja, the implementation transformers.js uses, over a set of conversations.
// The C++ renderer (src/serve/chat_template.cpp) must produce the same text.
//
//   cd tests/vectors/chat_templates && npm install && node make_vectors.mjs
import { Template } from "@huggingface/jinja";
import { writeFileSync } from "node:fs";

const families = {
  chatml: {
    template:
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    bos_token: "<s>",
    eos_token: "</s>",
  },
  llama2: {
    template:
      "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    bos_token: "<s>",
    eos_token: "</s>",
  },
  llama3: {
    template:
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    bos_token: "<|begin_of_text|>",
    eos_token: "<|end_of_text|>",
  },
  zephyr: {
    template:
      "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
    bos_token: "<s>",
    eos_token: "</s>",
  },
  // Llama-3.1/3.3 (meta-llama's tokenizer_config.json, tool branches left out: no request here
  // carries tools): a system turn always, with the knowledge and today's dates.
  "llama3.1": {
    template: "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
    bos_token: "<|begin_of_text|>",
    eos_token: "<|end_of_text|>",
  },
  // Llama-3.2: the date is strftime_now's, today's in transformers and in @huggingface/jinja;
  // the date the vectors were made on is kept as `date` for the test to give the renderer.
  "llama3.2": {
    family: "llama3.1",
    template: "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n        {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n\n{#- This block extracts the system message, so we can slot it into the right place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', 'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{%- for message in messages %}\n    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
    bos_token: "<|begin_of_text|>",
    eos_token: "<|end_of_text|>",
  },
  // SmolLM2-Instruct (a LlamaForCausalLM): ChatML with a default system turn.
  smollm2: {
    family: "chatml",
    template: "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    bos_token: "<|im_start|>",
    eos_token: "<|im_end|>",
    default_system: "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
  },
  plain: {
    template:
      "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}{% else %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
    bos_token: "<s>",
    eos_token: "</s>",
  },
};

const conversations = [
  [{ role: "user", content: "Hello!" }],
  [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is a chain?" },
  ],
  [
    { role: "system", content: "Answer briefly." },
    { role: "user", content: "  Two plus two?  " },
    { role: "assistant", content: " Four. " },
    { role: "user", content: "And times three?\nShow the steps." },
  ],
  [
    { role: "user", content: "caf\u00e9 \u{1F408} \u4e2d\u6587 e\u0301" },
    { role: "assistant", content: "\n\nA cat.\n" },
    { role: "user", content: "" },
  ],
  [
    { role: "assistant", content: "I speak first." },
    { role: "user", content: "Then I answer." },
  ],
];

families["llama3.2"].date = new Template('{{ strftime_now("%d %b %Y") }}').render({});
const cases = [];
for (const [family, f] of Object.entries(families)) {
  const template = new Template(f.template);
  for (const messages of conversations) {
    for (const add_generation_prompt of [true, false]) {
      let rendered;
      try {
        rendered = template.render({ messages, add_generation_prompt, bos_token: f.bos_token, eos_token: f.eos_token });
      } catch (e) {
        rendered = null; // the template refuses the conversation (Llama-2: roles must alternate)
      }
      cases.push({ family, messages, add_generation_prompt, rendered });
    }
  }
}
writeFileSync(
  new URL("vectors.json", import.meta.url),
  JSON.stringify({ generator: "@huggingface/jinja 0.5.11", families, cases }, null, 1) + "\n",
);
console.log(`wrote ${cases.length} cases`);
