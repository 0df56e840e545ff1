"""Drive the official `anthropic` SDK through the proxy while every Anthropic account is rate
limited, so the fallback chain answers: the first streamed tool call comes from OpenAI, the second
from Gemini (the test makes OpenAI fail for it). Prints what the SDK assembled, as JSON.
"""

import json
import os
import sys

import anthropic

TOOLS = [
    {
        "name": "Bash",
        "description": "Run a shell command",
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    }
]


def tool_call(client: anthropic.Anthropic) -> dict:
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        tools=TOOLS,
        messages=[{"role": "user", "content": "list files"}],
    ) as stream:
        final = stream.get_final_message()
    tool_use = [b for b in final.content if b.type == "tool_use"]
    return {
        "model": final.model,
        "stop_reason": final.stop_reason,
        "text": [b.text for b in final.content if b.type == "text"],
        "tool_name": tool_use[0].name if tool_use else None,
        "tool_id": tool_use[0].id if tool_use else None,
        "tool_input": tool_use[0].input if tool_use else None,
        "output_tokens": final.usage.output_tokens,
    }


def main() -> int:
    client = anthropic.Anthropic(
        base_url=os.environ["ANTHROPIC_BASE_URL"],
        api_key=os.environ.get("ANTHROPIC_API_KEY", "sdk-dummy-key"),
        max_retries=0,
        timeout=30,
    )
    out = {"openai": tool_call(client), "gemini": tool_call(client)}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
