// Drive the official TypeScript SDK (`@anthropic-ai/sdk`) through the proxy and print what it
// assembled, as JSON: the twin of tests/python/sdk_check.py.
//
// Run by tests/tests/e2e/clients.rs with ANTHROPIC_BASE_URL pointing at the proxy and a dummy
// ANTHROPIC_API_KEY (the proxy swaps it for an account's key). Exits non-zero on any SDK error.

import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({
  baseURL: process.env.ANTHROPIC_BASE_URL,
  apiKey: process.env.ANTHROPIC_API_KEY ?? "sdk-dummy-key",
  maxRetries: 0,
  timeout: 30_000,
});
const out = {};
const hello = [{ role: "user", content: "say hi" }];

const plain = await client.messages.create({
  model: "claude-sonnet-4-5",
  max_tokens: 64,
  messages: hello,
});
out.plain = {
  text: plain.content[0].text,
  stop_reason: plain.stop_reason,
  input_tokens: plain.usage.input_tokens,
  output_tokens: plain.usage.output_tokens,
};

{
  const deltas = [];
  const stream = client.messages.stream({ model: "claude-sonnet-4-5", max_tokens: 64, messages: hello });
  stream.on("text", (text) => deltas.push(text));
  const final = await stream.finalMessage();
  out.streamed = {
    deltas,
    text: final.content[0].text,
    stop_reason: final.stop_reason,
    input_tokens: final.usage.input_tokens,
    output_tokens: final.usage.output_tokens,
  };
}

{
  const tools = [
    {
      name: "Bash",
      description: "Run a shell command",
      input_schema: {
        type: "object",
        properties: { command: { type: "string" } },
        required: ["command"],
      },
    },
  ];
  const final = await client.messages
    .stream({
      model: "claude-sonnet-4-5",
      max_tokens: 64,
      tools,
      messages: [{ role: "user", content: "list files" }],
    })
    .finalMessage();
  const toolUse = final.content.filter((b) => b.type === "tool_use");
  out.tool = {
    stop_reason: final.stop_reason,
    text: final.content.filter((b) => b.type === "text").map((b) => b.text),
    tool_name: toolUse[0]?.name ?? null,
    tool_id: toolUse[0]?.id ?? null,
    tool_input: toolUse[0]?.input ?? null,
  };
}

// The upstream breaks inside the fourth event: the SDK must raise an API error (the proxy's
// `error` event after whole events), not end quietly with partial text.
{
  const deltas = [];
  try {
    const stream = client.messages.stream(
      { model: "claude-sonnet-4-5", max_tokens: 64, messages: hello },
      { headers: { "x-fake-cut-inside": "4" } },
    );
    stream.on("text", (text) => deltas.push(text));
    await stream.finalMessage();
    out.cut = { raised: null, deltas };
  } catch (e) {
    const raised = e instanceof Anthropic.APIError ? "APIError" : `other:${e?.constructor?.name}`;
    out.cut = { raised, message: String(e?.message ?? e), deltas };
  }
}

process.stdout.write(JSON.stringify(out));
