//! The index against real ZeroMQ sockets: the simulator's publisher (its real prefix cache) and,
//! for garbage and gaps, a hand-driven publisher on real sockets.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use inference_sim::kv_events::{encode_batch, KvEvent};
use inference_sim::{KvEventsEncoding, PodConfig, Simulator};
use kv_events::{Endpoints, KvEventsConfig, KvEventsIndex, StreamState};
use scheduler::plugins::scorers::PreciseBlockIndex;
use scheduler::prefix::token_blocks::{chain_seed, token_block_keys};
use zeromq::{PubSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const BLOCK_SIZE: usize = 16;
const KV_BLOCKS: usize = 16;
const POD: &str = "pod-a";

fn small_cache() -> PodConfig {
    PodConfig {
        kv_blocks: KV_BLOCKS,
        block_size: BLOCK_SIZE,
        max_model_len: KV_BLOCKS * BLOCK_SIZE,
        time_scale: 0.05,
        kv_events_port: Some(0),
        ..PodConfig::default()
    }
}

fn start_pod(config: PodConfig) -> Simulator {
    Simulator::start(config, &[SocketAddr::from(([127, 0, 0, 1], 0))]).expect("pod starts")
}

fn endpoints(sim: &Simulator) -> Endpoints {
    let pod = &sim.pods()[0];
    Endpoints {
        publish: pod.kv_events_endpoint().unwrap(),
        replay: pod.kv_events_replay_endpoint(),
    }
}

fn index() -> KvEventsIndex {
    KvEventsIndex::new(KvEventsConfig {
        replay_timeout_ms: 500,
        reconnect_initial_ms: 20,
        reconnect_max_ms: 200,
        ..KvEventsConfig::default()
    })
    .unwrap()
}

/// Prompt `n`: four blocks of token ids nobody else uses.
fn prompt(n: u32) -> Vec<u32> {
    (0..4 * BLOCK_SIZE as u32)
        .map(|i| 10_000 * (n + 1) + i)
        .collect()
}

fn keys(tokens: &[u32]) -> Vec<u64> {
    let mut out = Vec::new();
    token_block_keys(chain_seed(None), tokens, BLOCK_SIZE, &mut out);
    out
}

/// One completion over a real HTTP/1.1 connection; panics unless it answers 200.
fn complete(sim: &Simulator, tokens: &[u32]) {
    let body = serde_json::json!({"prompt": tokens, "max_tokens": 1}).to_string();
    let mut stream = TcpStream::connect(sim.pods()[0].addr()).unwrap();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn reset(sim: &Simulator) {
    let mut stream = TcpStream::connect(sim.pods()[0].addr()).unwrap();
    write!(
        stream,
        "POST /admin/reset HTTP/1.1\r\nhost: sim\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn synced(index: &KvEventsIndex) {
    wait_until("the subscriber to sync", || {
        index
            .pod_status(POD)
            .is_some_and(|s| s.state == StreamState::Synced)
    });
}

#[test]
fn routes_follow_the_pods_evictions_and_resets() {
    let sim = start_pod(small_cache());
    let index = index();
    index.subscribe(POD, endpoints(&sim));
    synced(&index);
    let prompts: Vec<Vec<u32>> = (0..5).map(prompt).collect();

    complete(&sim, &prompts[0]);
    wait_until("the first prompt's blocks", || {
        index.matched_blocks(POD, &keys(&prompts[0])) == 4
    });
    assert_eq!(index.precise_matches(POD, &keys(&prompts[0])), Some(4));
    // A request sharing the first two blocks only matches those.
    let mut diverging = prompts[0][..2 * BLOCK_SIZE].to_vec();
    diverging.extend(&prompts[1][..2 * BLOCK_SIZE]);
    assert_eq!(index.matched_blocks(POD, &keys(&diverging)), 2);

    // Three more fill the 16-block cache; the fifth evicts the first prompt's blocks.
    for p in &prompts[1..5] {
        complete(&sim, p);
    }
    wait_until("the fifth prompt's blocks", || {
        index.matched_blocks(POD, &keys(&prompts[4])) == 4
    });
    wait_until("the first prompt's eviction", || {
        index.matched_blocks(POD, &keys(&prompts[0])) == 0
    });
    for p in &prompts[1..5] {
        assert_eq!(index.matched_blocks(POD, &keys(p)), 4);
    }
    assert_eq!(index.blocks(), KV_BLOCKS);

    reset(&sim);
    wait_until("the reset", || index.blocks() == 0);
    let status = index.pod_status(POD).unwrap();
    assert_eq!(status.state, StreamState::Synced);
    // A batch published before the subscription reached the PUB socket is a gap the replay
    // fills: never a drop.
    assert_eq!((status.dropped, status.garbage), (0, 0), "{status:?}");
    assert!(status.batches >= 6, "{status:?}");

    index.unsubscribe(POD);
    assert!(index.pod_status(POD).is_none());
    assert_eq!(index.precise_matches(POD, &keys(&prompts[1])), None);
}

#[test]
fn a_late_subscriber_learns_the_cache_from_the_replay_buffer() {
    let sim = start_pod(PodConfig {
        kv_events_encoding: KvEventsEncoding::Map,
        ..small_cache()
    });
    complete(&sim, &prompt(0));
    complete(&sim, &prompt(1));
    let index = index();
    index.subscribe(POD, endpoints(&sim));
    synced(&index);
    wait_until("the replayed blocks", || {
        index.matched_blocks(POD, &keys(&prompt(1))) == 4
    });
    assert_eq!(index.matched_blocks(POD, &keys(&prompt(0))), 4);
    let status = index.pod_status(POD).unwrap();
    assert!(status.replays_ok >= 1, "{status:?}");
}

/// A port free now, and the next one too, for a pod that must come back on the same ports.
fn two_free_ports() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

#[test]
fn a_restarted_publisher_replaces_the_pods_entries() {
    let port = two_free_ports();
    let config = PodConfig {
        kv_events_port: Some(port),
        ..small_cache()
    };
    let sim = start_pod(config.clone());
    let index = index();
    index.subscribe(POD, endpoints(&sim));
    synced(&index);
    for n in 0..3 {
        complete(&sim, &prompt(n));
    }
    wait_until("the first life's blocks", || index.blocks() == 12);
    let seq_before = index.pod_status(POD).unwrap().last_seq.unwrap();
    assert!(seq_before >= 2);

    drop(sim); // the pod dies: its cache is gone
    wait_until("the disconnect", || {
        index.pod_status(POD).unwrap().state == StreamState::Stale
    });
    assert_eq!(index.precise_matches(POD, &keys(&prompt(0))), None, "stale");

    let sim = start_pod(config);
    complete(&sim, &prompt(3));
    wait_until("the second life's blocks", || {
        index.matched_blocks(POD, &keys(&prompt(3))) == 4
    });
    synced(&index);
    assert_eq!(index.matched_blocks(POD, &keys(&prompt(0))), 0);
    assert_eq!(index.blocks(), 4);
    let status = index.pod_status(POD).unwrap();
    assert!(status.restarts >= 1, "{status:?}");
    assert!(status.connects >= 2, "{status:?}");
    assert!(status.last_seq.unwrap() < seq_before, "{status:?}");
}

fn frames(parts: &[&[u8]]) -> ZmqMessage {
    ZmqMessage::try_from(
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p))
            .collect::<Vec<_>>(),
    )
    .unwrap()
}

fn stored(tokens: &[u32], hashes: &[u64], parent: Option<u64>) -> KvEvent {
    KvEvent::BlockStored {
        block_hashes: hashes.to_vec(),
        parent_block_hash: parent,
        token_ids: tokens.to_vec(),
        block_size: BLOCK_SIZE,
        lora_id: None,
        lora_name: None,
    }
}

fn batch(events: &[KvEvent]) -> Vec<u8> {
    encode_batch(1.0, events, KvEventsEncoding::Array)
}

/// A publisher driven by hand, on real sockets: garbage, gaps, and a replay socket that
/// answers as vLLM's does from what the test gives it.
#[test]
fn garbage_is_counted_and_gaps_are_filled_from_replay_or_dropped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut publisher = PubSocket::new();
        let publish = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
        let mut replay = RouterSocket::new();
        let replay_at = replay.bind("tcp://127.0.0.1:0").await.unwrap();
        let index = index();
        index.subscribe(
            POD,
            Endpoints {
                publish: publish.to_string(),
                replay: Some(replay_at.to_string()),
            },
        );
        // The subscriber's first move is a replay from 0: answer "nothing buffered".
        answer_replay(&mut replay, &[]).await;
        wait_async(|| {
            index
                .pod_status(POD)
                .is_some_and(|s| s.state == StreamState::Synced)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // subscription reaches PUB

        let a = prompt(0);
        let b = prompt(1);
        let batches = [
            batch(&[stored(&a[..32], &[1, 2], None)]),
            batch(&[stored(&a[32..], &[3, 4], Some(2))]),
            batch(&[stored(&b, &[5, 6, 7, 8], None)]),
            batch(&[KvEvent::BlockRemoved {
                block_hashes: vec![4],
            }]),
        ];
        let seq = |n: u64| n.to_be_bytes();
        // Garbage: wrong frame count, short sequence number, unreadable payload with no
        // number to tie it to.
        publisher.send(frames(&[b"", b"x"])).await.unwrap();
        publisher.send(frames(&[b"", b"123", b"zz"])).await.unwrap();
        publisher
            .send(frames(&[b"", &seq(0), &batches[0]]))
            .await
            .unwrap();
        publisher
            .send(frames(&[b"", &seq(1), &batches[1]]))
            .await
            .unwrap();
        wait_async(|| index.matched_blocks(POD, &keys(&a)) == 4).await;
        assert_eq!(index.pod_status(POD).unwrap().garbage, 2);

        // Seq 2 is lost on the way; 3 arrives: the subscriber asks for 2.. and gets it.
        publisher
            .send(frames(&[b"", &seq(3), &batches[3]]))
            .await
            .unwrap();
        answer_replay(&mut replay, &[(2, &batches[2]), (3, &batches[3])]).await;
        wait_async(|| index.matched_blocks(POD, &keys(&b)) == 4).await;
        assert_eq!(index.matched_blocks(POD, &keys(&a)), 3, "block 4 removed");
        let status = index.pod_status(POD).unwrap();
        assert_eq!(
            (status.gaps, status.replays_ok, status.dropped),
            (1, 2, 0),
            "{status:?}"
        );

        // Seq 4..9 lost and the replay buffer no longer has them: entries dropped, the
        // stream followed from 10 on.
        let c = prompt(2);
        let tenth = batch(&[stored(&c, &[9, 10, 11, 12], None)]);
        publisher
            .send(frames(&[b"", &seq(10), &tenth]))
            .await
            .unwrap();
        answer_replay(&mut replay, &[(10, &tenth)]).await;
        wait_async(|| index.matched_blocks(POD, &keys(&c)) == 4).await;
        assert_eq!(
            index.matched_blocks(POD, &keys(&b)),
            0,
            "dropped with the gap"
        );
        // A valid number with an unreadable payload is a lost batch: entries dropped.
        publisher
            .send(frames(&[b"", &seq(11), b"\xc1\xc1"]))
            .await
            .unwrap();
        wait_async(|| index.blocks() == 0).await;
        let status = index.pod_status(POD).unwrap();
        assert_eq!(status.state, StreamState::Synced);
        assert_eq!(
            (status.gaps, status.dropped, status.garbage),
            (2, 2, 3),
            "{status:?}"
        );
        assert_eq!(status.last_seq, Some(10));
    });
}

/// Serves one replay request on `router` with `batches`, then the end marker.
async fn answer_replay(router: &mut RouterSocket, batches: &[(u64, &[u8])]) {
    let request = tokio::time::timeout(Duration::from_secs(5), router.recv())
        .await
        .expect("a replay request")
        .unwrap()
        .into_vec();
    let [identity, empty, _start] = request.as_slice() else {
        panic!("replay request of {} frames", request.len());
    };
    assert!(empty.is_empty());
    for (seq, payload) in batches {
        router
            .send(frames(&[identity, b"", &seq.to_be_bytes(), payload]))
            .await
            .unwrap();
    }
    router
        .send(frames(&[identity, b"", &(-1i64).to_be_bytes(), b""]))
        .await
        .unwrap();
}

async fn wait_async(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
