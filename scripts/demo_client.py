"""Sends shared-prefix traffic through the gateway and prints which pod served each group.

Usage: demo_client.py GATEWAY_URL [groups] [prompts-per-group] [pod ports...]
With pod ports, also prints each pod's prefix-cache hit ratio from its vLLM metrics.
Standard library only, so the demo needs nothing beyond Python itself.
"""
import json
import sys
import urllib.request
from collections import Counter, defaultdict

url = sys.argv[1].rstrip("/") + "/v1/completions"
groups = int(sys.argv[2]) if len(sys.argv) > 2 else 8
per_group = int(sys.argv[3]) if len(sys.argv) > 3 else 4

served = defaultdict(Counter)
for prompt_index in range(per_group):
    for group in range(groups):
        system = f"You are support agent #{group} for product line {group * 7}. " * 12
        body = json.dumps({
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "prompt": f"{system}\nQuestion {prompt_index}: how do I reset my password?",
            "max_tokens": 16,
        }).encode()
        req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            served[group][resp.headers.get("x-gateway-destination-endpoint", "?")] += 1

print(f"\n{groups} shared-prefix groups x {per_group} prompts, through {url}\n")
print(f"{'group':>5}  {'pod(s) that served it':<40} requests")
for group in range(groups):
    pods = ", ".join(f"{pod} x{n}" for pod, n in sorted(served[group].items()))
    print(f"{group:>5}  {pods:<40} {sum(served[group].values())}")
pods_used = Counter()
for counter in served.values():
    pods_used.update(counter)
print(f"\nrequests per pod: {dict(sorted(pods_used.items()))}")
sticky = sum(1 for c in served.values() if len(c) == 1)
print(f"groups that stayed on one pod: {sticky}/{groups}")


def metric(text, name):
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


hits = queries = 0.0
for port in sys.argv[4:]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    h, q = metric(text, "vllm:prefix_cache_hits_total"), metric(text, "vllm:prefix_cache_queries_total")
    hits, queries = hits + h, queries + q
    print(f"pod 127.0.0.1:{port}: prefix-cache hits {h:.0f} of {q:.0f} prompt tokens")
if queries:
    print(f"prefix-cache hit ratio over all pods: {hits / queries:.2f}")
