"""A small tool-using agent on a diffusion model: two tools, then a typed final answer.

    python examples/agent_tools.py            # the embedded model, in this process, offline
    python examples/agent_tools.py --server   # the same loop against `dlmprompt serve` over HTTP

Each turn the model decides (a choice slot: call or reply) and, if it calls, writes a call whose
tool name is one of ours and whose arguments are valid under that tool's schema, whatever the
weights; the loop runs the tool and feeds the result back. The final answer is a `Report`, valid
under its schema. A 5M model picks odd arguments; the structure is exact.
"""

from __future__ import annotations

import argparse
import json
from typing import Literal

from pydantic import BaseModel, Field

import dlmprompt
from dlmprompt.integrations.core import chat_backend

CITIES = {"lisbon": (21, 545_000), "oslo": (4, 709_000), "lima": (19, 9_750_000)}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Today's temperature in a city, in degrees Celsius.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"enum": ["Lisbon", "Oslo", "Lima"]}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_population",
            "description": "How many people live in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"enum": ["Lisbon", "Oslo", "Lima"]}},
                "required": ["city"],
            },
        },
    },
]


class Report(BaseModel):
    city: Literal["Lisbon", "Oslo", "Lima"]
    temperature_c: int = Field(ge=-60, le=60)
    warm: bool


def run_tool(name: str, args: dict) -> str:
    temp, people = CITIES[args["city"].lower()]
    return f"{temp} C" if name == "get_weather" else f"{people:,} people"


def agent(backend, question: str, max_turns: int = 3) -> Report:  # type: ignore[no-untyped-def]
    messages: list[dict] = [{"role": "user", "content": question}]
    for turn in range(max_turns):
        answer = backend.complete({"messages": messages, "tools": TOOLS, "seed": turn})
        message = answer["choices"][0]["message"]
        if not message.get("tool_calls"):
            print(f"turn {turn}: the model replies instead of calling a tool")
            break
        messages.append(message)
        for call in message["tool_calls"]:
            name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
            result = run_tool(name, args)
            print(f"turn {turn}: {name}({json.dumps(args)}) -> {result}")
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    schema = Report.model_json_schema()
    rf = {"type": "json_schema", "json_schema": {"name": "Report", "schema": schema, "strict": True}}
    final = backend.complete({"messages": messages, "tools": TOOLS, "tool_choice": "none", "response_format": rf})
    return Report.model_validate_json(final["choices"][0]["message"]["content"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="store_true", help="run the loop against a dlmprompt server on a local port")
    args = parser.parse_args()
    question = "Is it warm in Lisbon today? Look it up."
    model = dlmprompt.load()
    if not args.server:
        print(agent(chat_backend(model), question).model_dump_json())
        return
    from dlmprompt.serving.server import background

    with background(model) as srv:
        print(f"server at {srv.url}")
        print(agent(chat_backend(srv.url), question).model_dump_json())


if __name__ == "__main__":
    main()
