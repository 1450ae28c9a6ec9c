//! The HTTP filter's configuration: the `filter_config` of the `inference-scheduler` filter in
//! envoy.yaml, as JSON. Every key is optional; unknown keys and text after the object are
//! rejected so a typo fails the config load instead of being silently ignored.
//!
//! The filter's settings are policy (which paths, body limits, profiles, when to shed). What
//! describes the pods themselves (scraping, the prefix index) is the pool's, set on the
//! cluster's load-balancing policy (see `pool_config`).

use scheduler::{parse_object, ConfigError, SchedulerConfig};
use serde::Deserialize;

use crate::saturation::SaturationConfig;

/// Default cap on a buffered request body: large enough for 1 MB prompts many times over.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Largest accepted `max_body_bytes`: Envoy's buffer limits are 32-bit, and a body this large
/// is no prompt any model takes.
pub const MAX_MAX_BODY_BYTES: u64 = 1 << 30;

/// The header that carries the chosen endpoint upstream and back to the client, as in the
/// Gateway API Inference Extension's endpoint-picker protocol.
pub const DESTINATION_HEADER: &str = "x-gateway-destination-endpoint";

/// The response header explaining a decision, when `decision_header` is on.
pub const DECISION_HEADER: &str = "x-inference-scheduler-decision";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Request paths (exact match, query string ignored) whose POST bodies are scheduled.
    pub inference_paths: Vec<String>,
    /// Largest request body buffered for scheduling; larger ones get 413.
    pub max_body_bytes: u64,
    /// Whether the response carries `x-gateway-destination-endpoint` too.
    pub response_header: bool,
    /// Whether the response carries `x-inference-scheduler-decision`: the profile, each
    /// scorer's score for the chosen pod and the predicted prefix hits (for debugging).
    pub decision_header: bool,
    /// Whether the text a pod generates is learned as it streams back: the next turn of a
    /// conversation then finds its whole history (prompt and answers) cached on that pod.
    pub learn_answers: bool,
    /// The scheduler: profiles, plugins, weights (see scheduler/README.md). Absent or `null`:
    /// queue 1, KV-cache 1, prefix 1. Parsed by `from_json` into `scheduler_config`.
    scheduler: serde_json::Value,
    #[serde(skip)]
    pub scheduler_config: SchedulerConfig,
    /// Moved to the pool's config; present only to answer with a clear error.
    pod_metrics: Option<serde::de::IgnoredAny>,
    /// When pods count as full, and what sheddable requests are told then.
    pub saturation: SaturationConfig,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            inference_paths: vec!["/v1/completions".into(), "/v1/chat/completions".into()],
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            response_header: true,
            decision_header: false,
            learn_answers: true,
            scheduler: serde_json::Value::Null,
            scheduler_config: SchedulerConfig::default(),
            pod_metrics: None,
            saturation: SaturationConfig::default(),
        }
    }
}

/// Where settings that describe the pods live now.
const POOL_SETTING: &str = "describes the pods, so it is set once per cluster: move it into the \
    `lb_policy_config` of the cluster's inference-scheduler load-balancing policy";

impl FilterConfig {
    /// Parses the filter config. Empty input means all defaults. Errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut config: FilterConfig = parse_object(bytes)?;
        if config.pod_metrics.is_some() {
            return Err(ConfigError::new("pod_metrics", POOL_SETTING));
        }
        if config.scheduler.get("prefix_index").is_some() {
            return Err(ConfigError::new("scheduler.prefix_index", POOL_SETTING));
        }
        config.scheduler_config =
            SchedulerConfig::from_value(&config.scheduler).map_err(|e| e.nested_in("scheduler"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_MAX_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(ConfigError::new(
                "max_body_bytes",
                format!("must be between 1 and {MAX_MAX_BODY_BYTES} (1 GiB)"),
            ));
        }
        if let Some(bad) = self.inference_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(ConfigError::new(
                "inference_paths",
                format!("{bad:?} must start with '/'"),
            ));
        }
        self.saturation
            .validate()
            .map_err(|e| e.nested_in("saturation"))
    }

    /// Whether `path` (possibly with a query string) is one of the inference paths.
    pub fn is_inference_path(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.inference_paths.iter().any(|p| p == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_means_defaults() {
        let c = FilterConfig::from_json(b"").unwrap();
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert!(c.response_header);
        assert!(c.is_inference_path("/v1/completions"));
        assert!(c.is_inference_path("/v1/chat/completions?x=1"));
        assert!(!c.is_inference_path("/v1/models"));
        assert!(FilterConfig::from_json(b"{}").is_ok());
    }

    #[test]
    fn keys_override_defaults() {
        let c = FilterConfig::from_json(
            br#"{"inference_paths":["/generate"],"max_body_bytes":1024,"response_header":false}"#,
        )
        .unwrap();
        assert_eq!(c.max_body_bytes, 1024);
        assert!(!c.response_header);
        assert!(c.is_inference_path("/generate"));
        assert!(!c.is_inference_path("/v1/completions"));
    }

    fn error_path(json: &str) -> String {
        FilterConfig::from_json(json.as_bytes()).unwrap_err().path
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(error_path(r#"{"max_body_bytes":"big"}"#), "max_body_bytes");
        assert_eq!(
            error_path(r#"{"inference_paths":["v1"]}"#),
            "inference_paths"
        );
        assert_eq!(error_path(r#"{"max_body_bytes":0}"#), "max_body_bytes");
        assert_eq!(
            error_path(r#"{"saturation":{"kv_threshold":2}}"#),
            "saturation.kv_threshold"
        );
        assert_eq!(
            error_path(r#"{"scheduler":{"profiles":"x"}}"#),
            "scheduler.profiles"
        );
        let e = FilterConfig::from_json(br#"{"max_body_byte":1}"#).unwrap_err();
        assert!(e.message.contains("max_body_byte"), "{e}");
    }

    #[test]
    fn trailing_text_top_level_arrays_and_huge_sizes_are_refused() {
        let e = FilterConfig::from_json(br#"{"max_body_bytes": 1000} xyz"#).unwrap_err();
        assert!(e.message.contains("text after the JSON object"), "{e}");
        let e = FilterConfig::from_json(b"[1]").unwrap_err();
        assert!(e.message.contains("must be a JSON object"), "{e}");
        let huge = format!(r#"{{"max_body_bytes":{}}}"#, u64::MAX);
        assert_eq!(error_path(&huge), "max_body_bytes");
        assert_eq!(
            error_path(r#"{"saturation":{"retry_after_s":100000}}"#),
            "saturation.retry_after_s"
        );
    }

    #[test]
    fn pool_settings_in_the_filter_config_point_to_the_cluster() {
        let e = FilterConfig::from_json(br#"{"pod_metrics":{"interval_ms":10}}"#).unwrap_err();
        assert_eq!(e.path, "pod_metrics");
        assert!(e.message.contains("lb_policy_config"), "{e}");
        let e = FilterConfig::from_json(br#"{"scheduler":{"prefix_index":{}}}"#).unwrap_err();
        assert_eq!(e.path, "scheduler.prefix_index");
    }
}
