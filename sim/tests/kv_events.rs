//! The KV-event stream decoded with vLLM's own message types (Python `msgspec` + `pyzmq` from
//! the project's virtualenv, `tests/kv_events_wire.py`): stored, removed and cleared events
//! from the pod's real prefix cache, contiguous sequence numbers, replay. Once against the
//! binary's flags (array encoding, replay on the port after the PUB port), once against an
//! in-process pod (map encoding).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use inference_sim::{KvEventsEncoding, PodConfig};

mod common;

const BLOCK_SIZE: usize = 16;
/// Four prompts of four blocks fill the cache; the fifth evicts.
const KV_BLOCKS: usize = 16;

fn small_cache() -> PodConfig {
    PodConfig {
        kv_blocks: KV_BLOCKS,
        block_size: BLOCK_SIZE,
        max_model_len: KV_BLOCKS * BLOCK_SIZE,
        ..common::fast_config()
    }
}

/// Runs the Python decoder against a pod; returns its JSON summary.
fn decode_with_vllm_types(
    http: &str,
    publish: &str,
    replay: &str,
    encoding: &str,
) -> serde_json::Value {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = manifest.join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (scripts/setup-venv.sh) to create the project's virtualenv",
        python.display()
    );
    let output = Command::new(&python)
        .arg(manifest.join("tests/kv_events_wire.py"))
        .args([http, publish, replay, encoding])
        .args([BLOCK_SIZE.to_string(), KV_BLOCKS.to_string()])
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the vLLM-typed decoder failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("a JSON summary")
}

fn check_summary(seen: &serde_json::Value, encoding: &str) {
    assert_eq!(seen["encoding"], encoding);
    // 5 prompts of 4 blocks, then one more after the reset.
    assert_eq!(seen["stored_blocks"], 24);
    assert_eq!(seen["removed_blocks"], 4);
    let batches = seen["batches"].as_u64().unwrap();
    assert!(batches >= 7, "{seen}");
    assert_eq!(seen["replayed"].as_u64().unwrap(), batches - 2);
}

/// Two consecutive free loopback ports (PUB, and replay on the next one as the flag defaults).
fn two_free_ports() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_publishes_vllm_array_encoded_events() {
    let port = two_free_ports();
    let mut child = Process(
        Command::new(env!("CARGO_BIN_EXE_inference-sim"))
            .args(["--base-port", "0", "--time-scale", "0.05"])
            .args(["--kv-blocks", &KV_BLOCKS.to_string()])
            .args(["--block-size", &BLOCK_SIZE.to_string()])
            .args(["--max-model-len", &(KV_BLOCKS * BLOCK_SIZE).to_string()])
            .args(["--kv-events-port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start inference-sim"),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let listening = lines.next().unwrap().unwrap();
    let http = listening
        .strip_prefix("inference-sim: pod 0 listening on ")
        .unwrap_or_else(|| panic!("{listening:?}"));
    let events = lines.next().unwrap().unwrap();
    let publish = format!("tcp://127.0.0.1:{port}");
    let replay = format!("tcp://127.0.0.1:{}", port + 1);
    assert_eq!(
        events,
        format!("inference-sim: pod 0 kv events on {publish} replay {replay}")
    );
    let seen = decode_with_vllm_types(&format!("http://{http}"), &publish, &replay, "array");
    check_summary(&seen, "array");
}

#[test]
fn an_in_process_pod_publishes_vllm_map_encoded_events() {
    let sim = common::start(
        PodConfig {
            kv_events_port: Some(0),
            kv_events_encoding: KvEventsEncoding::Map,
            ..small_cache()
        },
        1,
    );
    let pod = &sim.pods()[0];
    let seen = decode_with_vllm_types(
        &pod.url(),
        &pod.kv_events_endpoint().unwrap(),
        &pod.kv_events_replay_endpoint().unwrap(),
        "map",
    );
    check_summary(&seen, "map");
}

#[test]
fn pods_publish_nothing_unless_asked() {
    let sim = common::start(small_cache(), 1);
    assert!(sim.pods()[0].kv_events().is_none());
}
