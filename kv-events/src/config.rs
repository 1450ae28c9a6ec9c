//! Settings of the KV-event index and its subscribers.

use std::time::Duration;

use scheduler::ConfigError;
use serde::Deserialize;

/// Every key is optional; unknown keys are errors (the pool reads this from its JSON, the
/// `kv_events` key of the cluster's `lb_policy_config`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvEventsConfig {
    /// The port of every pod's PUB socket, on the pod's address (vLLM's default 5557).
    pub publish_port: Option<u16>,
    /// Instead of `publish_port`: the PUB socket's port is the pod's HTTP port plus this (for
    /// several pods on one host, as the simulator runs them).
    pub publish_port_offset: Option<i32>,
    /// The port of every pod's replay (ROUTER) socket; none by default (gaps then drop the
    /// pod's entries and resynchronise from the live stream).
    pub replay_port: Option<u16>,
    /// Instead of `replay_port`: the pod's HTTP port plus this.
    pub replay_port_offset: Option<i32>,
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
            publish_port: None,
            publish_port_offset: None,
            replay_port: None,
            replay_port_offset: None,
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

/// vLLM's default port of the KV-event PUB socket.
pub const DEFAULT_PUBLISH_PORT: u16 = 5557;

impl KvEventsConfig {
    /// Rejects settings that cannot work; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.publish_port.is_some() && self.publish_port_offset.is_some() {
            return Err(ConfigError::new(
                "publish_port_offset",
                "give publish_port or publish_port_offset, not both",
            ));
        }
        if self.replay_port.is_some() && self.replay_port_offset.is_some() {
            return Err(ConfigError::new(
                "replay_port_offset",
                "give replay_port or replay_port_offset, not both",
            ));
        }
        for (field, port) in [
            ("publish_port", self.publish_port),
            ("replay_port", self.replay_port),
        ] {
            if port == Some(0) {
                return Err(ConfigError::new(field, "must be a port, 1 to 65535"));
            }
        }
        if !(1..=1024).contains(&self.block_size) {
            return Err(ConfigError::new("block_size", "must be 1 to 1024 tokens"));
        }
        if !(1..=1 << 26).contains(&self.max_blocks_per_pod) {
            return Err(ConfigError::new(
                "max_blocks_per_pod",
                "must be 1 to 67,108,864",
            ));
        }
        let durations = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("reconnect_initial_ms", self.reconnect_initial_ms),
            ("reconnect_max_ms", self.reconnect_max_ms),
            ("replay_timeout_ms", self.replay_timeout_ms),
        ];
        for (field, ms) in durations {
            if !(1..=3_600_000).contains(&ms) {
                return Err(ConfigError::new(field, "must be 1 ms to 1 h"));
            }
        }
        Ok(())
    }

    /// Where the pod at `pod_address` (`host:port`, `[v6]:port`) publishes, by these rules;
    /// `None` if the address has no host or port, or an offset leaves the port range.
    pub fn endpoints_of(&self, pod_address: &str) -> Option<Endpoints> {
        let (_, port) = pod_address.rsplit_once(':')?;
        let http_port: i32 = port.parse().ok()?;
        let port_of = |fixed: Option<u16>, offset: Option<i32>| match (fixed, offset) {
            (Some(port), _) => Some(Some(port)),
            (None, Some(offset)) => u16::try_from(http_port + offset)
                .ok()
                .filter(|p| *p != 0)
                .map(Some),
            (None, None) => Some(None),
        };
        let publish =
            port_of(self.publish_port, self.publish_port_offset)?.unwrap_or(DEFAULT_PUBLISH_PORT);
        let replay = port_of(self.replay_port, self.replay_port_offset)?;
        Endpoints::on_pod_host(pod_address, publish, replay)
    }

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
    fn endpoints_follow_fixed_ports_or_offsets() {
        let fixed = KvEventsConfig {
            replay_port: Some(5558),
            ..KvEventsConfig::default()
        };
        let e = fixed.endpoints_of("10.0.0.7:8000").unwrap();
        assert_eq!(e.publish, "tcp://10.0.0.7:5557");
        assert_eq!(e.replay.as_deref(), Some("tcp://10.0.0.7:5558"));
        let offsets = KvEventsConfig {
            publish_port_offset: Some(1000),
            replay_port_offset: Some(-10),
            ..KvEventsConfig::default()
        };
        let e = offsets.endpoints_of("127.0.0.1:8001").unwrap();
        assert_eq!(e.publish, "tcp://127.0.0.1:9001");
        assert_eq!(e.replay.as_deref(), Some("tcp://127.0.0.1:7991"));
        assert!(offsets.endpoints_of("127.0.0.1:65000").is_none());
        assert!(offsets.endpoints_of("no-port").is_none());
        assert_eq!(
            KvEventsConfig::default()
                .endpoints_of("[::1]:80")
                .unwrap()
                .replay,
            None
        );
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let error = |json: &str| {
            serde_json::from_str::<KvEventsConfig>(json)
                .unwrap()
                .validate()
                .unwrap_err()
                .path
        };
        assert_eq!(
            error(r#"{"publish_port": 1, "publish_port_offset": 2}"#),
            "publish_port_offset"
        );
        assert_eq!(error(r#"{"replay_port": 0}"#), "replay_port");
        assert_eq!(error(r#"{"block_size": 0}"#), "block_size");
        assert_eq!(error(r#"{"replay_timeout_ms": 0}"#), "replay_timeout_ms");
        assert!(KvEventsConfig::default().validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<KvEventsConfig>(r#"{"blocksize": 16}"#).unwrap_err();
        assert!(error.to_string().contains("blocksize"));
        let config: KvEventsConfig = serde_json::from_str(r#"{"block_size": 32}"#).unwrap();
        assert_eq!(config.block_size, 32);
    }
}
