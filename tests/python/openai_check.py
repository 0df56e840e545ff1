"""Drive the official `openai` SDK against the proxy's OpenAI-compatible endpoint and print what it
got, as JSON: a plain completion, a streamed one with usage, a streamed tool call assembled from
its deltas, the model list, and an error.

Run by tests/tests/e2e/openai_endpoint.rs with OPENAI_BASE_URL pointing at the proxy's /v1.
"""

import json
import os
import sys

import openai


def main() -> int:
    client = openai.OpenAI(
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key="client-key-the-proxy-ignores",
        max_retries=0,
        timeout=30,
    )
    out = {}

    plain = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "say hi"}],
    )
    out["plain"] = {
        "text": plain.choices[0].message.content,
        "finish_reason": plain.choices[0].finish_reason,
        "prompt_tokens": plain.usage.prompt_tokens,
        "completion_tokens": plain.usage.completion_tokens,
    }

    deltas, usage, finish = [], None, None
    for chunk in client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "say hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    out["streamed"] = {"deltas": deltas, "completion_tokens": usage, "finish_reason": finish}

    calls, finish = {}, None
    tools = [
        {
            "type": "function",
            "function": {
                "name": "Bash",
                "description": "Run a shell command",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"],
                },
            },
        }
    ]
    for chunk in client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "list files"}],
        tools=tools,
        stream=True,
    ):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    call["id"] = tc.id
                if tc.function and tc.function.name:
                    call["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    call["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    out["tool"] = {
        "finish_reason": finish,
        "calls": [
            {"id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
            for _, c in sorted(calls.items())
        ],
    }

    out["models"] = [m.id for m in client.models.list()]

    try:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "robot", "content": "x"}])
        out["error"] = None
    except openai.BadRequestError as e:
        out["error"] = {"status": e.status_code, "message": e.body.get("message") if isinstance(e.body, dict) else str(e.body)}

    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
