"""Serve the embedded model over HTTP and query it three ways: the remote backend, the native
client with streaming, and the official `openai` client (pip install openai).

    python examples/serve_and_query.py

The server runs in a background thread on a free loopback port; `dlmprompt serve --port 8000`
runs the same server on its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

import dlmprompt
from dlmprompt import Prompt, slot
from dlmprompt.serving.server import background


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)
    kind: Literal["customer", "staff"]


prompt = Prompt("Ann Lee (41) is on our staff.\nRecord: ") + slot("person", schema=Person, max_tokens=6)

with background() as srv:
    print("serving on", srv.url)
    backend = dlmprompt.load(srv.url)
    result = dlmprompt.generate(backend, prompt)
    print("remote backend:", repr(result.value("person")))

    with dlmprompt.Client(srv.url) as client:
        for item in client.stream(Prompt("Zip code: ") + slot("zip", regex="[0-9]{5}", max_tokens=5), seed=1):
            if isinstance(item, dlmprompt.Step):
                print(f"  step {item.index}: committed {len(item.committed)} token(s)")
            else:
                print("native stream:", item["zip"])

    try:
        from openai import OpenAI
    except ImportError:
        print("openai is not installed; skipping the OpenAI-compatible part")
    else:
        oa = OpenAI(base_url=srv.url + "/v1", api_key="unused")
        done = oa.chat.completions.parse(
            model="dlmprompt-default",
            messages=[{"role": "user", "content": "Bob Stone, 29, buys from us. His record?"}],
            response_format=Person,
        )
        print("openai parse:", repr(done.choices[0].message.parsed))
        yes_no = oa.chat.completions.create(
            model="dlmprompt-default",
            messages=[{"role": "user", "content": "Is Bob staff?"}],
            extra_body={"choice": ["yes", "no"]},
        )
        print("openai choice:", yes_no.choices[0].message.content)
