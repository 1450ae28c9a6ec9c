//! The pod's KV-cache events on the wire, as vLLM publishes them with `--kv-events-config`
//! (`vllm/distributed/kv_events.py`, `ZmqEventPublisher`):
//!
//! - a PUB socket sends one message per engine step that changed the prefix cache, three
//!   frames: `topic`, the sequence number as 8 bytes big-endian (0, 1, 2, ... per publisher),
//!   and a msgpack `KVEventBatch`;
//! - a `KVEventBatch` is msgspec `array_like`: `[ts, events, data_parallel_rank]` with `ts` the
//!   wall clock in seconds (float) and the rank 0;
//! - each event is a tagged msgspec struct, encoded either positionally
//!   (`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//!   lora_name]`, `["BlockRemoved", block_hashes, medium]`, `["AllBlocksCleared"]`: vLLM with
//!   `array_like=True`) or as a map with the tag under `"type"` and the same field names (vLLM
//!   after it dropped `array_like` from the event structs). Fields vLLM gives defaults
//!   (`extra_keys`, `group_idx`, ...) are left out, as msgspec's `omit_defaults` does for them;
//! - a ROUTER socket serves replays: a request `[identity, "", start_seq (8 bytes BE)]` gets every
//!   buffered message with a sequence number from `start_seq` on as `[identity, "", seq,
//!   payload]`, then the end marker `[identity, "", -1 (8 bytes BE), ""]`. The buffer keeps the
//!   last `buffer_steps` batches.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rmpv::Value;
use tokio::sync::{mpsc, watch};
use zeromq::{Endpoint, PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::config::{KvEventsEncoding, PodConfig};

/// vLLM's `MEDIUM_GPU`: where the simulated blocks live.
const MEDIUM: &str = "GPU";

/// The replay end marker's sequence number.
const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();

/// One change to the prefix cache, as vLLM reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum KvEvent {
    /// Blocks that just became full and cached, consecutive in one sequence.
    BlockStored {
        block_hashes: Vec<u64>,
        /// Hash of the block before the first one here; `None` for a sequence's first block.
        parent_block_hash: Option<u64>,
        /// The tokens of all the blocks, `block_size` per block.
        token_ids: Vec<u32>,
        block_size: usize,
        /// vLLM's LoRA request id (1-based); `None` for the base model.
        lora_id: Option<u64>,
        lora_name: Option<String>,
    },
    /// Blocks evicted from the cache (vLLM sends one per evicted block).
    BlockRemoved { block_hashes: Vec<u64> },
    /// The whole prefix cache was dropped (`/admin/reset`, vLLM's `reset_prefix_cache`).
    AllBlocksCleared,
}

/// The msgpack `KVEventBatch` for `events`, stamped `ts`.
pub fn encode_batch(ts: f64, events: &[KvEvent], encoding: KvEventsEncoding) -> Vec<u8> {
    let events = events.iter().map(|e| encode_event(e, encoding)).collect();
    let batch = Value::Array(vec![Value::F64(ts), Value::Array(events), Value::from(0)]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &batch).expect("writing to a Vec cannot fail");
    out
}

fn encode_event(event: &KvEvent, encoding: KvEventsEncoding) -> Value {
    let hashes = |hashes: &[u64]| Value::Array(hashes.iter().map(|&h| Value::from(h)).collect());
    let (tag, fields): (&str, Vec<(&str, Value)>) = match event {
        KvEvent::BlockStored {
            block_hashes,
            parent_block_hash,
            token_ids,
            block_size,
            lora_id,
            lora_name,
        } => (
            "BlockStored",
            vec![
                ("block_hashes", hashes(block_hashes)),
                (
                    "parent_block_hash",
                    parent_block_hash.map_or(Value::Nil, Value::from),
                ),
                (
                    "token_ids",
                    Value::Array(token_ids.iter().map(|&t| Value::from(t)).collect()),
                ),
                ("block_size", Value::from(*block_size as u64)),
                ("lora_id", lora_id.map_or(Value::Nil, Value::from)),
                ("medium", Value::from(MEDIUM)),
                (
                    "lora_name",
                    lora_name.as_deref().map_or(Value::Nil, Value::from),
                ),
            ],
        ),
        KvEvent::BlockRemoved { block_hashes } => (
            "BlockRemoved",
            vec![
                ("block_hashes", hashes(block_hashes)),
                ("medium", Value::from(MEDIUM)),
            ],
        ),
        KvEvent::AllBlocksCleared => ("AllBlocksCleared", Vec::new()),
    };
    match encoding {
        KvEventsEncoding::Array => Value::Array(
            std::iter::once(Value::from(tag))
                .chain(fields.into_iter().map(|(_, value)| value))
                .collect(),
        ),
        KvEventsEncoding::Map => Value::Map(
            std::iter::once((Value::from("type"), Value::from(tag)))
                .chain(
                    fields
                        .into_iter()
                        .map(|(name, value)| (Value::from(name), value)),
                )
                .collect(),
        ),
    }
}

/// Where a pod publishes: the PUB and the replay (ROUTER) sockets' addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvEventsAddrs {
    pub publish: SocketAddr,
    pub replay: SocketAddr,
}

/// Hands batches from the engine to the publisher task. Sending never blocks the engine.
#[derive(Clone)]
pub struct EventSink(mpsc::UnboundedSender<Vec<KvEvent>>);

impl EventSink {
    pub fn publish(&self, events: Vec<KvEvent>) {
        let _ = self.0.send(events);
    }
}

/// Binds the PUB socket on `publish_port` and the ROUTER socket on `replay_port` (0: free
/// ports) and starts pod `index`'s publisher task, which runs until `stopped` turns true.
pub async fn start(
    config: Arc<PodConfig>,
    index: usize,
    stopped: watch::Receiver<bool>,
    host: IpAddr,
    publish_port: u16,
    replay_port: u16,
) -> io::Result<(EventSink, KvEventsAddrs)> {
    let mut publisher = PubSocket::new();
    let publish = bind(&mut publisher, host, publish_port).await?;
    let mut replay = RouterSocket::new();
    let replay_addr = bind(&mut replay, host, replay_port).await?;
    let (sink, batches) = mpsc::unbounded_channel();
    let publisher = Publisher {
        config,
        index,
        publisher,
        replay,
        buffer: VecDeque::new(),
        next_seq: 0,
    };
    tokio::spawn(publisher.run(batches, stopped));
    Ok((
        EventSink(sink),
        KvEventsAddrs {
            publish,
            replay: replay_addr,
        },
    ))
}

async fn bind(socket: &mut impl Socket, host: IpAddr, port: u16) -> io::Result<SocketAddr> {
    let endpoint = Endpoint::Tcp(host.into(), port);
    let bound = socket
        .bind(&endpoint.to_string())
        .await
        .map_err(|error| io::Error::other(format!("kv events on {host}:{port}: {error}")))?;
    match bound {
        Endpoint::Tcp(_, port) => Ok(SocketAddr::new(host, port)),
        other => Err(io::Error::other(format!("unexpected endpoint {other}"))),
    }
}

/// One pod's publisher: its sockets and the batches kept for replay.
struct Publisher {
    config: Arc<PodConfig>,
    index: usize,
    publisher: PubSocket,
    replay: RouterSocket,
    buffer: VecDeque<(u64, Bytes)>,
    next_seq: u64,
}

impl Publisher {
    async fn run(
        mut self,
        mut batches: mpsc::UnboundedReceiver<Vec<KvEvent>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let topic = Bytes::from(self.config.kv_events_topic.clone().into_bytes());
        let stop = async move {
            let _ = stopped.wait_for(|&stopped| stopped).await;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(events) => self.publish(&topic, &events).await,
                    None => return,
                },
                request = self.replay.recv() => match request {
                    Ok(request) => self.serve_replay(request).await,
                    Err(_) => tokio::task::yield_now().await,
                },
                () = &mut stop => return,
            }
        }
    }

    async fn publish(&mut self, topic: &Bytes, events: &[KvEvent]) {
        let payload = Bytes::from(encode_batch(now(), events, self.config.kv_events_encoding));
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = frames([topic.clone(), seq_frame(seq), payload.clone()]);
        if let Err(error) = self.publisher.send(message).await {
            eprintln!(
                "inference-sim: pod {} kv event batch {seq} not sent: {error}",
                self.index
            );
        }
        if self.buffer.len() >= self.config.kv_events_buffer_steps {
            self.buffer.pop_front();
        }
        self.buffer.push_back((seq, payload));
    }

    /// Answers one replay request; a malformed one is ignored, as vLLM does.
    async fn serve_replay(&mut self, request: ZmqMessage) {
        let frames_in = request.into_vec();
        let [identity, _delimiter, start] = frames_in.as_slice() else {
            return;
        };
        let Ok(start) = <[u8; 8]>::try_from(start.as_ref()) else {
            return;
        };
        let start = u64::from_be_bytes(start);
        for (seq, payload) in self.buffer.iter().filter(|(seq, _)| *seq >= start) {
            let reply = frames([
                identity.clone(),
                Bytes::new(),
                seq_frame(*seq),
                payload.clone(),
            ]);
            if self.replay.send(reply).await.is_err() {
                return; // the requester went away
            }
        }
        let end = frames([
            identity.clone(),
            Bytes::new(),
            Bytes::from_static(&END_SEQ),
            Bytes::new(),
        ]);
        let _ = self.replay.send(end).await;
    }
}

fn seq_frame(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_be_bytes())
}

fn frames<const N: usize>(frames: [Bytes; N]) -> ZmqMessage {
    ZmqMessage::try_from(frames.to_vec()).expect("at least one frame")
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Value {
        rmpv::decode::read_value(&mut &bytes[..]).unwrap()
    }

    fn stored() -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: vec![u64::MAX, 7],
            parent_block_hash: None,
            token_ids: vec![1, 2, 3, 4],
            block_size: 2,
            lora_id: Some(1),
            lora_name: Some("sql".into()),
        }
    }

    #[test]
    fn array_encoding_is_positional_with_the_tag_first() {
        let events = [
            stored(),
            KvEvent::BlockRemoved {
                block_hashes: vec![7],
            },
            KvEvent::AllBlocksCleared,
        ];
        let batch = decode(&encode_batch(1.5, &events, KvEventsEncoding::Array));
        let batch = batch.as_array().unwrap();
        assert_eq!(batch[0], Value::F64(1.5));
        assert_eq!(batch[2], Value::from(0));
        let events = batch[1].as_array().unwrap();
        let stored = events[0].as_array().unwrap();
        assert_eq!(stored[0], Value::from("BlockStored"));
        assert_eq!(stored[1].as_array().unwrap()[0].as_u64(), Some(u64::MAX));
        assert_eq!(stored[2], Value::Nil);
        assert_eq!(stored[4], Value::from(2));
        assert_eq!(stored[6], Value::from("GPU"));
        assert_eq!(stored.len(), 8);
        assert_eq!(
            events[1],
            Value::Array(vec![
                "BlockRemoved".into(),
                Value::Array(vec![7.into()]),
                "GPU".into()
            ])
        );
        assert_eq!(events[2], Value::Array(vec!["AllBlocksCleared".into()]));
    }

    #[test]
    fn map_encoding_names_every_field_and_tags_with_type() {
        let batch = decode(&encode_batch(2.0, &[stored()], KvEventsEncoding::Map));
        let event = &batch.as_array().unwrap()[1].as_array().unwrap()[0];
        let map = event.as_map().unwrap();
        let get = |key: &str| {
            map.iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("type"), Some("BlockStored".into()));
        assert_eq!(get("token_ids").unwrap().as_array().unwrap().len(), 4);
        assert_eq!(get("lora_name"), Some("sql".into()));
        assert_eq!(map.len(), 8);
    }
}
