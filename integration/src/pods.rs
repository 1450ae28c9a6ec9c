//! Simulated model-server pods for the tests, fast enough that a request takes milliseconds.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use inference_sim::{spawn_pods, PodConfig, Simulator};

/// `n` simulated pods at a fiftieth of real time, and their `ip:port` addresses.
pub fn fast_pods(n: usize) -> (Simulator, Vec<String>) {
    let sim = spawn_pods(
        PodConfig {
            time_scale: 0.02,
            ..PodConfig::default()
        },
        n,
    )
    .expect("start simulator");
    let addresses = sim.addrs().iter().map(ToString::to_string).collect();
    (sim, addresses)
}

/// Simulated pods publishing their KV events, on consecutive loopback ports so one pool config
/// reaches every pod's sockets: pod i serves HTTP on `base + i`, publishes on `base + n + i`
/// and replays on `base + 2n + i`.
pub struct EventPods {
    pub sim: Simulator,
    pub addresses: Vec<String>,
    /// The `kv_events` pool settings that reach these pods' sockets.
    pub kv_events: serde_json::Value,
}

/// Starts `n` pods with `config` (its `kv_events_port` and replay port are set here).
pub fn event_pods(n: usize, config: PodConfig) -> EventPods {
    for attempt in 0..50 {
        let base = free_port_run(3 * n, attempt);
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| SocketAddr::from((Ipv4Addr::LOCALHOST, base + i as u16)))
            .collect();
        let config = PodConfig {
            kv_events_port: Some(base + n as u16),
            kv_events_replay_port: Some(base + 2 * n as u16),
            ..config.clone()
        };
        let block_size = config.block_size;
        // Another process may have taken a port since it was probed: try another run.
        if let Ok(sim) = Simulator::start(config, &addrs) {
            return EventPods {
                sim,
                addresses: addrs.iter().map(ToString::to_string).collect(),
                kv_events: serde_json::json!({
                    "publish_port_offset": n,
                    "replay_port_offset": 2 * n,
                    "block_size": block_size,
                    "reconnect_initial_ms": 20,
                    "reconnect_max_ms": 200,
                }),
            };
        }
    }
    panic!("no run of {} free loopback ports found", 3 * n);
}

/// The first of `len` consecutive loopback ports that can be bound now, searched from a
/// starting point that differs per process and attempt.
fn free_port_run(len: usize, attempt: u16) -> u16 {
    let start = 20_000 + (std::process::id() as u16 % 1_000) * 30 + attempt * 97;
    (start..60_000)
        .step_by(len)
        .find(|&base| {
            (0..len as u16).all(|i| TcpListener::bind((Ipv4Addr::LOCALHOST, base + i)).is_ok())
        })
        .expect("free loopback ports")
}
