"""Renders chat templates with real Jinja, configured as Hugging Face transformers configures it
for vLLM (sandboxed, trim_blocks, lstrip_blocks, loop controls, raise_exception, strftime_now,
tojson as json.dumps), after vLLM's message preparation for string-format templates (the text
parts of a content list joined with newlines, absent content empty).

Reads {"templates": [...], "conversations": [[message, ...], ...], "bos_token", "eos_token"}
as JSON on stdin; prints [[rendering or {"error": message} per conversation] per template].
"""

import json
import sys
from datetime import datetime, timezone

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now(timezone.utc).strftime(format)


def prepared(message):
    content = message.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "\n".join(part["text"] for part in content if part["type"] == "text")
    return {"role": message["role"], "content": text}


def main():
    request = json.load(sys.stdin)
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    results = []
    for source in request["templates"]:
        template = env.from_string(source)
        rendered = []
        for conversation in request["conversations"]:
            try:
                rendered.append(
                    template.render(
                        messages=[prepared(m) for m in conversation],
                        add_generation_prompt=True,
                        bos_token=request["bos_token"],
                        eos_token=request["eos_token"],
                        tools=None,
                        documents=None,
                    )
                )
            except jinja2.exceptions.TemplateError as error:
                rendered.append({"error": str(error)})
        results.append(rendered)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
