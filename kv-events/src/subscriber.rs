//! One pod's subscriber task: a ZeroMQ SUB socket on the pod's PUB endpoint, and a DEALER on
//! its replay endpoint when it has one.
//!
//! - Connects, and reconnects after a disconnect, with exponential backoff.
//! - After every (re)connection it asks the replay socket for everything it buffers (from
//!   sequence 0) and reconciles: batches it has not applied are applied; a publisher whose
//!   numbers are behind ours restarted (its cache is new: entries dropped, rebuilt from its
//!   buffer); a buffer that no longer reaches our next number means batches were lost
//!   (entries dropped, rebuilt from what the buffer has).
//! - A live gap asks the replay socket for the missing range; if it cannot be had, the pod's
//!   entries are dropped and the stream followed from the current batch on.
//! - Live numbers that go back outside a replay overlap mean a restart.
//! - A message that cannot be understood is counted and skipped; one with a valid number but
//!   an unreadable payload is a lost batch (entries dropped). Nothing here panics on input.

use futures::StreamExt;
use scheduler::prefix::token_blocks::chain_seed;
use std::sync::Arc;
use tokio::time::{sleep, timeout, Instant};
use zeromq::{
    DealerSocket, Socket, SocketEvent, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage,
};

use crate::config::{Endpoints, KvEventsConfig};
use crate::status::StreamState;
use crate::wire::{decode_batch, split_message, Event};
use crate::PodEntry;

/// The replay end marker's sequence number (-1 as 8 bytes big-endian).
const END_SEQ: u64 = u64::MAX;

pub(crate) async fn run(entry: Arc<PodEntry>, endpoints: Endpoints, config: Arc<KvEventsConfig>) {
    let mut stream = Stream {
        entry,
        endpoints,
        config,
        next: None,
        overlap_floor: None,
    };
    let (initial, max) = stream.config.reconnect_delays();
    let mut backoff = initial;
    loop {
        let Some((socket, monitor)) = stream.connect().await else {
            sleep(backoff).await;
            backoff = (backoff * 2).min(max);
            continue;
        };
        backoff = initial;
        stream.entry.status.update(|c| c.connects += 1);
        stream.resync(0).await;
        stream.entry.status.set_state(StreamState::Synced);
        stream.follow(socket, monitor).await;
        stream.entry.status.set_state(StreamState::Stale);
        sleep(initial).await;
    }
}

struct Stream {
    entry: Arc<PodEntry>,
    endpoints: Endpoints,
    config: Arc<KvEventsConfig>,
    /// The next sequence number expected; `None` before the first batch (or after losing
    /// track).
    next: Option<u64>,
    /// Right after a replay, live batches from this number up to `next` are ones the replay
    /// already gave: duplicates, not a restart.
    overlap_floor: Option<u64>,
}

type Monitor = futures::channel::mpsc::Receiver<SocketEvent>;

impl Stream {
    async fn connect(&self) -> Option<(SubSocket, Monitor)> {
        let mut options = SocketOptions::default();
        options.connect_timeout(self.config.connect_timeout());
        let mut socket = SubSocket::with_options(options);
        let monitor = socket.monitor();
        let connected = timeout(
            self.config.connect_timeout(),
            socket.connect(&self.endpoints.publish),
        )
        .await;
        if !matches!(connected, Ok(Ok(()))) {
            return None;
        }
        socket.subscribe(&self.config.topic).await.ok()?;
        Some((socket, monitor))
    }

    /// Reads live batches until the connection drops.
    async fn follow(&mut self, mut socket: SubSocket, mut monitor: Monitor) {
        loop {
            tokio::select! {
                message = socket.recv() => match message {
                    Ok(message) => self.on_live(message).await,
                    Err(_) => return,
                },
                event = monitor.next() => match event {
                    Some(SocketEvent::Disconnected(_)) | None => return,
                    Some(_) => {}
                },
            }
        }
    }

    async fn on_live(&mut self, message: ZmqMessage) {
        let frames = message.into_vec();
        let (seq, payload) = match split_message(&frames) {
            Ok(parts) => parts,
            Err(_) => return self.entry.status.update(|c| c.garbage += 1),
        };
        match self.next {
            Some(next) if seq > next => {
                self.entry.status.update(|c| c.gaps += 1);
                self.resync(next).await;
                match self.next {
                    // The replay covered this batch too.
                    Some(next) if seq < next => return,
                    // Replay failed (it dropped the entries): follow from here.
                    None => {}
                    Some(next) if seq == next => {}
                    // The replay ended before this batch: what is between is lost.
                    Some(_) => self.drop_entries(),
                }
            }
            Some(next) if seq < next => {
                if self.overlap_floor.is_some_and(|floor| seq >= floor) {
                    return; // already applied from the replay
                }
                self.entry.status.update(|c| c.restarts += 1);
                self.drop_entries();
            }
            _ => {}
        }
        self.overlap_floor = None;
        self.apply(seq, payload);
    }

    /// Applies one batch: the next number is the one after it, whatever it held.
    fn apply(&mut self, seq: u64, payload: &[u8]) {
        self.next = Some(seq.wrapping_add(1));
        match decode_batch(payload) {
            Ok(events) => self.apply_events(seq, &events),
            Err(_) => {
                // Its number is valid, so it was a real batch whose changes we cannot know.
                self.entry.status.update(|c| c.garbage += 1);
                self.drop_entries();
            }
        }
    }

    fn apply_events(&self, seq: u64, events: &[Event]) {
        let block_size = self.config.block_size;
        let mut skipped = 0u64;
        {
            let mut blocks = self.entry.write_blocks();
            for event in events {
                match event {
                    Event::Stored {
                        block_hashes,
                        parent_block_hash,
                        token_ids,
                        block_size: size,
                        lora_name,
                        unnamed_lora,
                        on_gpu,
                    } => {
                        if !on_gpu {
                            continue;
                        }
                        if *size != block_size
                            || *unnamed_lora
                            || token_ids.len() != block_hashes.len() * block_size
                        {
                            skipped += block_hashes.len() as u64;
                            continue;
                        }
                        let seed = chain_seed(lora_name.as_deref());
                        blocks.store(
                            *parent_block_hash,
                            block_hashes,
                            token_ids,
                            block_size,
                            seed,
                        );
                    }
                    Event::Removed {
                        block_hashes,
                        on_gpu: true,
                    } => block_hashes.iter().for_each(|&hash| blocks.remove(hash)),
                    Event::Removed { .. } | Event::Other => {}
                    Event::Cleared => blocks.clear(),
                }
            }
        }
        self.entry.status.update(|c| {
            c.last_seq = Some(seq);
            c.batches += 1;
            c.skipped_blocks += skipped;
        });
    }

    fn drop_entries(&mut self) {
        self.entry.write_blocks().clear();
        self.entry.status.update(|c| c.dropped += 1);
    }

    /// Asks the replay socket for every batch from `from` on and reconciles it with what was
    /// applied (see the module comment). Without a replay socket, or if the replay fails,
    /// whatever may have been missed is unknown: entries are dropped if there were any.
    async fn resync(&mut self, from: u64) {
        let replayed = match &self.endpoints.replay {
            Some(endpoint) => self.replay(endpoint, from).await,
            None => None,
        };
        let Some(replayed) = replayed else {
            if self.next.is_some() {
                self.drop_entries();
            }
            self.next = None;
            return;
        };
        let (Some(first), Some(last)) = (replayed.first(), replayed.last()) else {
            // An empty buffer: a publisher that sent nothing yet. If we had followed one, it
            // restarted (a running vLLM keeps its last batches).
            if from == 0 && self.next.is_some() {
                self.entry.status.update(|c| c.restarts += 1);
                self.drop_entries();
                self.next = None;
            }
            self.entry.status.update(|c| c.replays_ok += 1);
            return;
        };
        let (first, last) = (first.0, last.0);
        match self.next {
            Some(next) if last.wrapping_add(1) < next => {
                self.entry.status.update(|c| c.restarts += 1);
                self.drop_entries();
                self.next = None;
            }
            Some(next) if first > next => self.drop_entries(),
            Some(_) => {}
            None => {}
        }
        self.entry.status.update(|c| c.replays_ok += 1);
        for (seq, payload) in &replayed {
            if self.next.is_none_or(|next| *seq >= next) {
                self.apply(*seq, payload);
            }
        }
        self.overlap_floor = Some(first);
    }

    /// The buffered batches from `from` on, in order, or `None` if the replay did not complete
    /// within the timeout.
    async fn replay(&self, endpoint: &str, from: u64) -> Option<Vec<(u64, Vec<u8>)>> {
        let deadline = Instant::now() + self.config.replay_timeout();
        let mut options = SocketOptions::default();
        options.connect_timeout(self.config.replay_timeout());
        let mut socket = DealerSocket::with_options(options);
        tokio::time::timeout_at(deadline, socket.connect(endpoint))
            .await
            .ok()?
            .ok()?;
        let request =
            ZmqMessage::try_from(vec![bytes_frame(&[]), bytes_frame(&from.to_be_bytes())]).ok()?;
        tokio::time::timeout_at(deadline, socket.send(request))
            .await
            .ok()?
            .ok()?;
        let mut batches = Vec::new();
        loop {
            let reply = tokio::time::timeout_at(deadline, socket.recv())
                .await
                .ok()?
                .ok()?;
            let frames = reply.into_vec();
            // [delimiter, seq, payload]; some vLLM versions add the topic before seq.
            let (seq, payload) = match frames.as_slice() {
                [_, seq, payload] | [_, _, seq, payload] => (seq, payload),
                _ => continue,
            };
            let Ok(seq) = <[u8; 8]>::try_from(seq.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            if seq == END_SEQ {
                return Some(batches);
            }
            if seq >= from && batches.last().is_none_or(|(last, _)| seq > *last) {
                batches.push((seq, payload.to_vec()));
            }
        }
    }
}

fn bytes_frame(bytes: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(bytes)
}
