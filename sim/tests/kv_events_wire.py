"""Decodes a simulated pod's KV-event stream with vLLM's own message types; run by
tests/kv_events.rs.

Usage: python kv_events_wire.py HTTP_BASE PUB_ENDPOINT REPLAY_ENDPOINT ENCODING BLOCK_SIZE KV_BLOCKS

ENCODING is `array` (vLLM's structs with array_like=True) or `map` (vLLM after it dropped
array_like from the event structs). The structs below are vLLM's definitions
(vllm/distributed/kv_events.py): the same fields, order, tags and msgspec options. Prints one JSON
object with what was observed; exits non-zero on any mismatch.
"""

import json
import sys
import time
import urllib.request
from typing import Any, Union

import msgspec
import zmq


def vllm_types(array_like: bool):
    """vLLM's KV-event structs; `array_like` is what changed between versions for the events
    (the batch stays array-shaped on the wire in both)."""

    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
        ts: float
        events: list[Any]
        data_parallel_rank: Union[int, None] = None

    class KVCacheEvent(
        msgspec.Struct, array_like=array_like, omit_defaults=True, gc=False, tag=True
    ):
        """Base class for all KV cache-related events"""

    class BlockStored(KVCacheEvent):
        block_hashes: list[int]
        parent_block_hash: Union[int, None]
        token_ids: list[int]
        block_size: int
        lora_id: Union[int, None]
        medium: Union[str, None]
        lora_name: Union[str, None]
        extra_keys: Union[list[Union[tuple[Any, ...], None]], None] = None
        group_idx: Union[int, None] = None
        kv_cache_spec_kind: Union[str, None] = None
        kv_cache_spec_sliding_window: Union[int, None] = None

    class BlockRemoved(KVCacheEvent):
        block_hashes: list[int]
        medium: Union[str, None]
        group_idx: Union[int, None] = None

    class AllBlocksCleared(KVCacheEvent):
        pass

    class KVEventBatch(EventBatch):
        events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]

    return KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared


def main() -> None:
    http, pub_endpoint, replay_endpoint, encoding, block_size, kv_blocks = sys.argv[1:7]
    block_size, kv_blocks = int(block_size), int(kv_blocks)
    assert encoding in ("array", "map"), encoding
    KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared = vllm_types(encoding == "array")
    decoder = msgspec.msgpack.Decoder(KVEventBatch)

    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub_endpoint)
    time.sleep(0.5)  # PUB drops messages until the subscription reached it (slow joiner)

    live = []  # (seq, raw payload, decoded batch)

    def receive_until(done, timeout=10.0):
        """Reads live messages until `done(events so far)` holds; returns the new events."""
        new = []
        deadline = time.monotonic() + timeout
        while not done(new):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {new}"
            if not sub.poll(int(left * 1000)):
                continue
            topic, seq_bytes, payload = sub.recv_multipart()
            assert topic == b"", topic
            assert len(seq_bytes) == 8, seq_bytes
            batch = decoder.decode(payload)
            assert batch.data_parallel_rank == 0, batch
            assert abs(batch.ts - time.time()) < 60, batch.ts
            assert batch.events, "a batch is only sent when the cache changed"
            live.append((int.from_bytes(seq_bytes, "big"), payload, batch))
            new.extend(batch.events)
        return new

    def complete(tokens):
        body = json.dumps({"prompt": tokens, "max_tokens": 1}).encode()
        request = urllib.request.Request(
            f"{http}/v1/completions", body, {"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200

    def stored_blocks(events):
        return sum(len(e.block_hashes) for e in events if isinstance(e, BlockStored))

    def check_stored(events, tokens):
        """The stored events of one prompt: its tokens block by block, chained by parent."""
        stored = [e for e in events if isinstance(e, BlockStored)]
        hashes, token_ids = [], []
        for event in stored:
            assert event.parent_block_hash == (hashes[-1] if hashes else None), event
            assert event.block_size == block_size and event.medium == "GPU", event
            assert event.lora_id is None and event.lora_name is None, event
            assert len(event.token_ids) == block_size * len(event.block_hashes), event
            hashes += event.block_hashes
            token_ids += event.token_ids
        assert token_ids == tokens, (token_ids, tokens)
        assert len(set(hashes)) == len(hashes), hashes
        return hashes

    blocks_per_prompt = 4
    prompts = [
        [10_000 * (p + 1) + i for i in range(blocks_per_prompt * block_size)] for p in range(5)
    ]
    assert kv_blocks == 4 * blocks_per_prompt, "the test fills the cache with four prompts"

    # Four prompts fill the cache exactly: stored events only.
    hashes = []
    for tokens in prompts[:4]:
        complete(tokens)
        events = receive_until(lambda new: stored_blocks(new) >= blocks_per_prompt)
        assert all(isinstance(e, BlockStored) for e in events), events
        hashes.append(check_stored(events, tokens))

    # A fifth evicts the least recently freed blocks, the first prompt's, tail first; the
    # removals come before the new blocks, in the same batch.
    complete(prompts[4])
    events = receive_until(lambda new: stored_blocks(new) >= blocks_per_prompt)
    removed = [e for e in events if isinstance(e, BlockRemoved)]
    assert all(len(e.block_hashes) == 1 and e.medium == "GPU" for e in removed), removed
    assert [e.block_hashes[0] for e in removed] == hashes[0][::-1], (removed, hashes[0])
    assert isinstance(events[0], BlockRemoved), events
    fifth = check_stored(events, prompts[4])
    assert not set(fifth) & set(h for p in hashes for h in p)

    # Reset: everything cleared; the same prompt afterwards stores the same hashes again.
    with urllib.request.urlopen(
        urllib.request.Request(f"{http}/admin/reset", b"", method="POST"), timeout=10
    ) as response:
        assert response.status == 200
    events = receive_until(lambda new: any(isinstance(e, AllBlocksCleared) for e in new))
    assert len(events) == 1, events
    complete(prompts[1])
    events = receive_until(lambda new: stored_blocks(new) >= blocks_per_prompt)
    assert check_stored(events, prompts[1]) == hashes[1], "hashes are deterministic"

    seqs = [seq for seq, _, _ in live]
    assert seqs == list(range(len(seqs))), f"sequence numbers are contiguous from 0: {seqs}"

    # Replay: a malformed request is ignored, then missed batches come back byte for byte,
    # followed by the end marker (-1, empty payload).
    replay = ctx.socket(zmq.DEALER)
    replay.connect(replay_endpoint)
    replay.send_multipart([b"", b"not eight bytes"])
    start = 2
    replay.send_multipart([b"", start.to_bytes(8, "big")])
    replayed = []
    while True:
        assert replay.poll(5000), "replay answered"
        empty, seq_bytes, payload = replay.recv_multipart()
        assert empty == b""
        if int.from_bytes(seq_bytes, "big", signed=True) == -1:
            assert payload == b""
            break
        replayed.append((int.from_bytes(seq_bytes, "big"), payload))
    assert [s for s, _ in replayed] == seqs[start:], replayed
    assert [p for _, p in replayed] == [p for _, p, _ in live[start:]]
    for _, payload in replayed:
        decoder.decode(payload)

    print(
        json.dumps(
            {
                "encoding": encoding,
                "batches": len(live),
                "stored_blocks": sum(
                    stored_blocks(b.events) for _, _, b in live
                ),
                "removed_blocks": len(removed),
                "replayed": len(replayed),
            }
        )
    )


if __name__ == "__main__":
    main()
