//! Settings of the KV-event index and its subscribers.

use std::time::Duration;

use serde::Deserialize;

/// Every key is optional; unknown keys are errors (the pool will read this from its JSON).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvEventsConfig {
    /// Tokens per block the pods use (vLLM's `--block-size`); events with another size are
    /// skipped and counted, since keys computed for requests would never match them.
    pub block_size: usize,
    /// Blocks remembered per pod at most; past it the oldest stored is forgotten.
    pub max_blocks_per_pod: usize,
    /// Topic the subscribers subscribe to (vLLM's `topic`; "" takes every message).
    pub topic: String,
    /// A connection attempt not done by then is retried.
    pub connect_timeout_ms: u64,
    /// First wait before reconnecting; doubles up to `reconnect_max_ms`.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// A replay that has not ended by then counts as failed (the pod's entries are dropped).
    pub replay_timeout_ms: u64,
}

impl Default for KvEventsConfig {
    fn default() -> Self {
        KvEventsConfig {
            block_size: 16,
            // vLLM on one H100 with Llama-3.1-8B holds ~28k blocks; 4x that leaves room for
            // larger GPUs while bounding a misbehaving stream.
            max_blocks_per_pod: 131_072,
            topic: String::new(),
            connect_timeout_ms: 1_000,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 2_000,
            replay_timeout_ms: 1_000,
        }
    }
}

impl KvEventsConfig {
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub(crate) fn replay_timeout(&self) -> Duration {
        Duration::from_millis(self.replay_timeout_ms.max(1))
    }

    pub(crate) fn reconnect_delays(&self) -> (Duration, Duration) {
        let initial = self.reconnect_initial_ms.max(1);
        (
            Duration::from_millis(initial),
            Duration::from_millis(self.reconnect_max_ms.max(initial)),
        )
    }
}

/// Where one pod publishes: its PUB socket and, if it has one, its replay (ROUTER) socket, as
/// ZeroMQ endpoints (`tcp://host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub publish: String,
    pub replay: Option<String>,
}

impl Endpoints {
    /// vLLM's layout on a pod's own host: the PUB socket on `publish_port` (vLLM's default
    /// 5557), replay on `replay_port` (5558 in vLLM's examples). `pod_address` is `host:port`
    /// (`[v6]:port` for IPv6); its port is the HTTP port and is replaced.
    pub fn on_pod_host(
        pod_address: &str,
        publish_port: u16,
        replay_port: Option<u16>,
    ) -> Option<Self> {
        let (host, _port) = pod_address.rsplit_once(':')?;
        if host.is_empty() {
            return None;
        }
        Some(Endpoints {
            publish: format!("tcp://{host}:{publish_port}"),
            replay: replay_port.map(|port| format!("tcp://{host}:{port}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_the_pods_host() {
        let e = Endpoints::on_pod_host("10.0.0.7:8000", 5557, Some(5558)).unwrap();
        assert_eq!(e.publish, "tcp://10.0.0.7:5557");
        assert_eq!(e.replay.as_deref(), Some("tcp://10.0.0.7:5558"));
        let v6 = Endpoints::on_pod_host("[::1]:8000", 5557, None).unwrap();
        assert_eq!(v6.publish, "tcp://[::1]:5557");
        assert!(Endpoints::on_pod_host("nohost", 1, None).is_none());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<KvEventsConfig>(r#"{"blocksize": 16}"#).unwrap_err();
        assert!(error.to_string().contains("blocksize"));
        let config: KvEventsConfig = serde_json::from_str(r#"{"block_size": 32}"#).unwrap();
        assert_eq!(config.block_size, 32);
    }
}
