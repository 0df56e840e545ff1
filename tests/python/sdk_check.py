"""Drive the official `anthropic` SDK through the proxy and print what it assembled, as JSON.

Run by tests/tests/e2e/sdk.rs with ANTHROPIC_BASE_URL pointing at the proxy and a dummy
ANTHROPIC_API_KEY (the proxy swaps it for an account's key). Exits non-zero on any SDK error.
"""

import json
import os
import sys

import anthropic


def main() -> int:
    client = anthropic.Anthropic(
        base_url=os.environ["ANTHROPIC_BASE_URL"],
        api_key=os.environ.get("ANTHROPIC_API_KEY", "sdk-dummy-key"),
        max_retries=0,
        timeout=30,
    )
    out = {}

    plain = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "say hi"}],
    )
    out["plain"] = {
        "text": plain.content[0].text,
        "stop_reason": plain.stop_reason,
        "input_tokens": plain.usage.input_tokens,
        "output_tokens": plain.usage.output_tokens,
    }

    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "say hi"}],
    ) as stream:
        deltas = [text for text in stream.text_stream]
        final = stream.get_final_message()
    out["streamed"] = {
        "deltas": deltas,
        "text": final.content[0].text,
        "stop_reason": final.stop_reason,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    }

    tools = [
        {
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        }
    ]
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        tools=tools,
        messages=[{"role": "user", "content": "list files"}],
    ) as stream:
        final = stream.get_final_message()
    tool_use = [b for b in final.content if b.type == "tool_use"]
    out["tool"] = {
        "stop_reason": final.stop_reason,
        "text": [b.text for b in final.content if b.type == "text"],
        "tool_name": tool_use[0].name if tool_use else None,
        "tool_id": tool_use[0].id if tool_use else None,
        "tool_input": tool_use[0].input if tool_use else None,
    }

    # The upstream breaks inside the fourth event: the SDK must raise an API error (the proxy's
    # `error` event after whole events), not end quietly with partial text.
    received = []
    try:
        with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "say hi"}],
            extra_headers={"x-fake-cut-inside": "4"},
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
        out["cut"] = {"raised": None, "deltas": received}
    except anthropic.APIStatusError as e:
        out["cut"] = {"raised": type(e).__name__, "message": str(e), "deltas": received}
    except Exception as e:  # noqa: BLE001 - what else the SDK raises is the finding
        out["cut"] = {"raised": "other:" + type(e).__name__, "message": str(e), "deltas": received}

    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
