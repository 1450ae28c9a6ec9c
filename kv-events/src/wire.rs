//! Decoding vLLM's KV-event messages (`vllm/distributed/kv_events.py`).
//!
//! A message is three ZeroMQ frames: topic, sequence number (8 bytes big-endian), msgpack
//! `KVEventBatch`. The batch is `[ts, events, data_parallel_rank]` (msgspec `array_like`; a map
//! with those keys is accepted too). Each event is a tagged struct, either positional
//! (`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//! lora_name, ...]`, `["BlockRemoved", block_hashes, medium, ...]`, `["AllBlocksCleared"]`) or, in
//! later vLLM, a map with the tag under `"type"`. Trailing fields vLLM added over time are
//! optional here; unknown tags and fields are skipped, so a newer publisher still decodes.
//!
//! Block hashes are integers (vLLM's default) or bytes (its sha256 hashing); bytes are folded to
//! 64 bits, which is all the index needs to match a removal with its store.

use rmpv::Value;
use xxhash_rust::xxh3::xxh3_64;

/// Why a message was not understood. Never fatal: the subscriber counts and skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not three frames, or a sequence frame that is not 8 bytes.
    Framing(String),
    /// The payload is not a msgpack `KVEventBatch`.
    Payload(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Framing(why) => write!(f, "bad framing: {why}"),
            WireError::Payload(why) => write!(f, "bad payload: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// One KV-cache event, reduced to what the index uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Stored {
        block_hashes: Vec<u64>,
        parent_block_hash: Option<u64>,
        token_ids: Vec<u32>,
        block_size: usize,
        /// The adapter's name (`lora_name`), if the blocks are an adapter's.
        lora_name: Option<String>,
        /// The event names an adapter only by `lora_id` (older vLLM): its chain seed is unknown.
        unnamed_lora: bool,
        /// In GPU memory (`medium` "GPU" or absent); blocks offloaded elsewhere are not hits.
        on_gpu: bool,
    },
    Removed {
        block_hashes: Vec<u64>,
        on_gpu: bool,
    },
    Cleared,
    /// A tag this decoder does not know (a newer vLLM's event).
    Other,
}

/// Splits a message into its sequence number and payload.
pub fn split_message(frames: &[impl AsRef<[u8]>]) -> Result<(u64, &[u8]), WireError> {
    let [_topic, seq, payload] = frames else {
        return Err(WireError::Framing(format!("{} frames", frames.len())));
    };
    let seq: [u8; 8] = seq
        .as_ref()
        .try_into()
        .map_err(|_| WireError::Framing(format!("{}-byte sequence number", seq.as_ref().len())))?;
    Ok((u64::from_be_bytes(seq), payload.as_ref()))
}

/// Decodes a `KVEventBatch` payload into its events.
pub fn decode_batch(mut payload: &[u8]) -> Result<Vec<Event>, WireError> {
    let value = rmpv::decode::read_value(&mut payload)
        .map_err(|error| WireError::Payload(error.to_string()))?;
    if !payload.is_empty() {
        return Err(WireError::Payload("bytes after the batch".into()));
    }
    let events = match &value {
        Value::Array(fields) if fields.len() >= 2 => &fields[1],
        Value::Map(_) => field(&value, "events", usize::MAX)
            .ok_or_else(|| WireError::Payload("batch without events".into()))?,
        _ => return Err(WireError::Payload("batch is not [ts, events, ...]".into())),
    };
    let Value::Array(events) = events else {
        return Err(WireError::Payload("events is not a list".into()));
    };
    events.iter().map(decode_event).collect()
}

fn decode_event(event: &Value) -> Result<Event, WireError> {
    let tag = match event {
        Value::Array(fields) => fields.first().and_then(Value::as_str),
        Value::Map(_) => field(event, "type", usize::MAX).and_then(Value::as_str),
        _ => None,
    }
    .ok_or_else(|| WireError::Payload("event without a tag".into()))?;
    // Positions count the tag as 0, as in the array encoding.
    let get = |name: &str, position: usize| field(event, name, position);
    let bad = |what: &str| WireError::Payload(format!("{tag}: bad {what}"));
    match tag {
        "BlockStored" => {
            let block_hashes = hashes(get("block_hashes", 1)).ok_or_else(|| bad("block_hashes"))?;
            let parent_block_hash = match get("parent_block_hash", 2) {
                None | Some(Value::Nil) => None,
                Some(value) => Some(hash(value).ok_or_else(|| bad("parent_block_hash"))?),
            };
            let token_ids = get("token_ids", 3)
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter()
                        .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                        .collect::<Option<Vec<u32>>>()
                })
                .ok_or_else(|| bad("token_ids"))?;
            let block_size = get("block_size", 4)
                .and_then(Value::as_u64)
                .and_then(|size| usize::try_from(size).ok())
                .ok_or_else(|| bad("block_size"))?;
            let lora_id = get("lora_id", 5).filter(|value| !value.is_nil());
            let lora_name = get("lora_name", 7)
                .and_then(Value::as_str)
                .map(str::to_owned);
            Ok(Event::Stored {
                block_hashes,
                parent_block_hash,
                token_ids,
                block_size,
                unnamed_lora: lora_id.is_some() && lora_name.is_none(),
                lora_name,
                on_gpu: on_gpu(get("medium", 6)),
            })
        }
        "BlockRemoved" => Ok(Event::Removed {
            block_hashes: hashes(get("block_hashes", 1)).ok_or_else(|| bad("block_hashes"))?,
            on_gpu: on_gpu(get("medium", 2)),
        }),
        "AllBlocksCleared" => Ok(Event::Cleared),
        _ => Ok(Event::Other),
    }
}

/// A struct field by name (map encoding) or position (array encoding).
fn field<'v>(value: &'v Value, name: &str, position: usize) -> Option<&'v Value> {
    match value {
        Value::Array(fields) => fields.get(position),
        Value::Map(entries) => entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value),
        _ => None,
    }
}

fn hash(value: &Value) -> Option<u64> {
    match value {
        // vLLM's hashes are Python ints below 2^64; a negative one keeps its bits.
        Value::Integer(int) => int.as_u64().or_else(|| int.as_i64().map(|v| v as u64)),
        Value::Binary(bytes) => Some(xxh3_64(bytes)),
        _ => None,
    }
}

fn hashes(value: Option<&Value>) -> Option<Vec<u64>> {
    value?.as_array()?.iter().map(hash).collect()
}

fn on_gpu(medium: Option<&Value>) -> bool {
    match medium {
        None | Some(Value::Nil) => true,
        Some(value) => value
            .as_str()
            .is_some_and(|m| m.eq_ignore_ascii_case("GPU")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn batch(events: Vec<Value>) -> Vec<u8> {
        encode(&Value::Array(vec![
            Value::F64(1.0),
            Value::Array(events),
            Value::from(0),
        ]))
    }

    #[test]
    fn decodes_positional_events_of_every_vllm_vintage() {
        let oldest = Value::Array(vec![
            "BlockStored".into(),
            Value::Array(vec![Value::from(u64::MAX)]),
            Value::Nil,
            Value::Array(vec![1.into(), 2.into()]),
            2.into(),
            Value::Nil,
        ]);
        let newer = Value::Array(vec![
            "BlockStored".into(),
            Value::Array(vec![7.into()]),
            Value::from(u64::MAX),
            Value::Array(vec![3.into(), 4.into()]),
            2.into(),
            1.into(),
            "CPU".into(),
            "sql".into(),
            Value::Nil,
            0.into(),
        ]);
        let events = decode_batch(&batch(vec![
            oldest,
            newer,
            Value::Array(vec!["BlockRemoved".into(), Value::Array(vec![7.into()])]),
            Value::Array(vec!["AllBlocksCleared".into()]),
            Value::Array(vec!["SomethingNew".into(), 1.into()]),
        ]))
        .unwrap();
        assert_eq!(
            events[0],
            Event::Stored {
                block_hashes: vec![u64::MAX],
                parent_block_hash: None,
                token_ids: vec![1, 2],
                block_size: 2,
                lora_name: None,
                unnamed_lora: false,
                on_gpu: true,
            }
        );
        let Event::Stored {
            parent_block_hash,
            lora_name,
            on_gpu,
            ..
        } = &events[1]
        else {
            panic!("{events:?}")
        };
        assert_eq!(*parent_block_hash, Some(u64::MAX));
        assert_eq!(lora_name.as_deref(), Some("sql"));
        assert!(!on_gpu);
        assert_eq!(
            events[2],
            Event::Removed {
                block_hashes: vec![7],
                on_gpu: true
            }
        );
        assert_eq!(events[3], Event::Cleared);
        assert_eq!(events[4], Event::Other);
    }

    #[test]
    fn decodes_map_events_and_bytes_hashes() {
        let stored = Value::Map(vec![
            ("type".into(), "BlockStored".into()),
            ("token_ids".into(), Value::Array(vec![5.into()])),
            (
                "block_hashes".into(),
                Value::Array(vec![Value::Binary(vec![1, 2, 3])]),
            ),
            ("parent_block_hash".into(), Value::Nil),
            ("block_size".into(), 1.into()),
            ("lora_id".into(), 3.into()),
            ("medium".into(), "GPU".into()),
        ]);
        let events = decode_batch(&batch(vec![stored])).unwrap();
        let Event::Stored {
            block_hashes,
            unnamed_lora,
            ..
        } = &events[0]
        else {
            panic!()
        };
        assert_eq!(block_hashes, &[xxh3_64(&[1, 2, 3])]);
        assert!(unnamed_lora, "an adapter known only by id");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for payload in [
            &b""[..],
            b"\xc1",
            b"\x93\x01",
            &batch(vec![Value::Array(vec!["BlockStored".into(), 1.into()])]),
            &batch(vec![Value::from(3)]),
            &encode(&Value::from("not a batch")),
        ] {
            assert!(decode_batch(payload).is_err(), "{payload:?}");
        }
        let mut trailing = batch(vec![]);
        trailing.push(0);
        assert!(decode_batch(&trailing).is_err());
        assert!(split_message(&[b"t".as_slice(), b"1234"]).is_err());
        assert!(split_message(&[b"t".as_slice(), b"1234", b"p"]).is_err());
        let five = 5u64.to_be_bytes();
        let frames = [&b""[..], &five, b"p"];
        let (seq, payload) = split_message(&frames).unwrap();
        assert_eq!((seq, payload), (5, &b"p"[..]));
    }
}
