"""LlamaIndex structured outputs on a dlmprompt model, exact by construction
(pip install llama-index-core).

    python examples/llamaindex_structured.py

`structured_predict` and `as_structured_llm` send the output class's JSON Schema as the answer's
constraint, so the reply always validates into the class (the tiny embedded model's content is
often nonsense; its structure is not).
"""

from __future__ import annotations

from typing import Literal

from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from dlmprompt.integrations.llamaindex import DLMPromptLLM


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)
    kind: Literal["customer", "staff"]


llm = DLMPromptLLM(max_tokens=24, value_tokens=6, seed=0)
print("chat:", llm.chat([ChatMessage(role="user", content="Hello!")]).message.content)

person = llm.structured_predict(Person, PromptTemplate("{text}\nRecord: "), text="Ann Lee (41) is on our staff.")
print("structured_predict:", repr(person))

reply = llm.as_structured_llm(Person).chat([ChatMessage(role="user", content="Bo Chen, 29, a customer.")])
print("as_structured_llm:", repr(reply.raw))
