//! Simulated model-server pods for the tests, fast enough that a request takes milliseconds.

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
