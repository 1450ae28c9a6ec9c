//! The HTTP filter's configuration: the `filter_config` of the `inference-scheduler` filter in
//! envoy.yaml, as JSON. Every key is optional; unknown keys are rejected so a typo fails the
//! config load instead of being silently ignored.

use pods::ScrapeConfig;
use serde::Deserialize;

use crate::saturation::SaturationConfig;

/// Default cap on a buffered request body: large enough for 1 MB prompts many times over.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

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
    /// The scheduler: profiles, plugins, weights, prefix index (see scheduler/README.md).
    /// Absent or `null`: queue 1, KV-cache 1, prefix 1.
    pub scheduler: serde_json::Value,
    /// How pod metrics are scraped.
    pub pod_metrics: ScrapeConfig,
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
            scheduler: serde_json::Value::Null,
            pod_metrics: ScrapeConfig::default(),
            saturation: SaturationConfig::default(),
        }
    }
}

impl FilterConfig {
    /// Parses the filter config. Empty input means all defaults. Errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let config: FilterConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            field_error(if path == "." { "" } else { &path }, &e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 {
            return Err(field_error("max_body_bytes", "must be > 0"));
        }
        if let Some(bad) = self.inference_paths.iter().find(|p| !p.starts_with('/')) {
            return Err(field_error(
                "inference_paths",
                &format!("{bad:?} must start with '/'"),
            ));
        }
        self.saturation
            .validate()
            .map_err(|(field, message)| field_error(&format!("saturation.{field}"), &message))?;
        self.pod_metrics
            .validate()
            .map_err(|(field, message)| field_error(&format!("pod_metrics.{field}"), &message))
    }

    /// Whether `path` (possibly with a query string) is one of the inference paths.
    pub fn is_inference_path(&self, path: &str) -> bool {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.inference_paths.iter().any(|p| p == path)
    }
}

/// A config error naming the field (a dotted path), as Envoy's log will show it.
pub fn field_error(path: &str, message: &str) -> String {
    if path.is_empty() {
        format!("inference-scheduler filter config: {message}")
    } else {
        format!("inference-scheduler filter config: field `{path}`: {message}")
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

    #[test]
    fn errors_name_the_field() {
        let e = FilterConfig::from_json(br#"{"max_body_bytes":"big"}"#).unwrap_err();
        assert!(e.contains("`max_body_bytes`"), "{e}");
        let e = FilterConfig::from_json(br#"{"max_body_byte":1}"#).unwrap_err();
        assert!(e.contains("max_body_byte"), "{e}");
        let e = FilterConfig::from_json(br#"{"inference_paths":["v1"]}"#).unwrap_err();
        assert!(e.contains("`inference_paths`"), "{e}");
        let e = FilterConfig::from_json(br#"{"max_body_bytes":0}"#).unwrap_err();
        assert!(e.contains("`max_body_bytes`"), "{e}");
        let e = FilterConfig::from_json(br#"{"pod_metrics":{"preset":"tgi"}}"#).unwrap_err();
        assert!(e.contains("`pod_metrics.preset`"), "{e}");
        let e = FilterConfig::from_json(br#"{"pod_metrics":{"interval_ms":"fast"}}"#).unwrap_err();
        assert!(e.contains("`pod_metrics.interval_ms`"), "{e}");
        let e = FilterConfig::from_json(b"{").unwrap_err();
        assert!(e.starts_with("inference-scheduler filter config"), "{e}");
    }
}
