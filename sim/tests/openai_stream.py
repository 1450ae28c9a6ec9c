"""Drives a simulated pod with the real `openai` client; run by tests/openai_client.rs.

Usage: python openai_stream.py BASE_URL MODEL
Prints one JSON object with what was observed; exits non-zero on any mismatch.
"""

import json
import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)
    seen = {}

    chunks = list(
        client.completions.create(
            model=model,
            prompt="The quick brown fox",
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    usage = chunks[-1].usage
    assert len(texts) == 16, texts
    assert chunks[-2].choices[0].finish_reason == "length"
    assert usage.completion_tokens == 16 and usage.prompt_tokens > 0, usage
    seen["completion_stream_tokens"] = len(texts)

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    content, roles, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                content.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert roles == ["assistant"], roles
    assert len(content) == 8 and finish == "length", (content, finish)
    assert usage is not None and usage.completion_tokens == 8, usage
    seen["chat_stream_tokens"] = len(content)
    seen["chat_text"] = "".join(content)

    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=5
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == 5, reply.usage
    seen["chat_tokens"] = reply.usage.completion_tokens

    models = [m.id for m in client.models.list()]
    assert model in models, models
    seen["models"] = models

    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as error:
        seen["unknown_model_status"] = error.status_code
    try:
        client.completions.create(model=model, prompt="x", max_tokens=10_000_000)
        raise AssertionError("over-long request accepted")
    except openai.BadRequestError as error:
        seen["too_long_status"] = error.status_code
        assert "maximum context length" in str(error), error

    print(json.dumps(seen))


if __name__ == "__main__":
    main()
