//! How pods are scraped: the `pod_metrics` object of the pool's config.

use scheduler::ConfigError;
use serde::Deserialize;

use crate::metric_names::MetricNames;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Time between the starts of two scrapes of one pod.
    pub interval_ms: u64,
    /// A scrape that has not completed by then is abandoned and counts as failed.
    pub timeout_ms: u64,
    /// Path of the metrics endpoint on every pod.
    pub path: String,
    /// Metric names: `vllm`, `sglang`, or `custom` (then `custom_names` says which).
    pub preset: String,
    pub custom_names: Option<MetricNames>,
    /// Metrics older than this make a pod count as stale in the module's own metrics (the
    /// scheduler's `stale-metrics` filter has its own `max_age_ms`, 1000 by default too).
    pub stale_after_ms: u64,
    /// After this many scrapes in a row without an answer (refused, reset, timed out) a pod is
    /// treated as unhealthy by the scheduler until it answers again; 0 disables this.
    pub unhealthy_after_failures: u32,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval_ms: 50,
            timeout_ms: 1000,
            path: "/metrics".into(),
            preset: "vllm".into(),
            custom_names: None,
            stale_after_ms: 1000,
            unhealthy_after_failures: 3,
        }
    }
}

/// Longest accepted duration setting: a pod whose metrics are older than this is as good as
/// unknown, and a larger value is far more likely a typo than an intent.
const MAX_MS: u64 = 3_600_000;

impl ScrapeConfig {
    /// Checks the values; errors name the field relative to this object.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("interval_ms", self.interval_ms),
            ("timeout_ms", self.timeout_ms),
            ("stale_after_ms", self.stale_after_ms),
        ] {
            if !(1..=MAX_MS).contains(&value) {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 1 and {MAX_MS} (one hour)"),
                ));
            }
        }
        if self.unhealthy_after_failures > 1000 {
            return Err(ConfigError::new(
                "unhealthy_after_failures",
                "must be at most 1000 (0 disables it)",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(
                "path",
                format!("{:?} must start with '/'", self.path),
            ));
        }
        self.metric_names().map(|_| ())
    }

    /// The metric names the preset (or the custom mapping) selects.
    pub fn metric_names(&self) -> Result<MetricNames, ConfigError> {
        match (self.preset.as_str(), &self.custom_names) {
            ("custom", Some(names)) => Ok(names.clone()),
            ("custom", None) => Err(ConfigError::new(
                "custom_names",
                "is required when preset is \"custom\"",
            )),
            (_, Some(_)) => Err(ConfigError::new(
                "custom_names",
                "is only allowed when preset is \"custom\"",
            )),
            (preset, None) => MetricNames::preset(preset).ok_or_else(|| {
                ConfigError::new(
                    "preset",
                    format!(
                        "unknown preset {preset:?}; expected \"vllm\", \"sglang\" or \"custom\""
                    ),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ScrapeConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_scrape_vllm_every_50ms() {
        let c = parse("{}");
        assert_eq!(
            (c.interval_ms, c.timeout_ms, c.path.as_str()),
            (50, 1000, "/metrics")
        );
        assert_eq!(c.metric_names().unwrap(), MetricNames::vllm());
    }

    #[test]
    fn presets_and_custom_names() {
        assert_eq!(
            parse(r#"{"preset":"sglang"}"#).metric_names().unwrap(),
            MetricNames::sglang()
        );
        let c = parse(r#"{"preset":"custom","custom_names":{"waiting":["q"],"kv_usage":["kv"]}}"#);
        let names = c.metric_names().unwrap();
        assert_eq!(names.waiting, vec!["q".to_owned()]);
        assert!(names.running.is_empty());
    }

    #[test]
    fn bad_values_name_the_field() {
        assert_eq!(
            parse(r#"{"preset":"tgi"}"#).validate().unwrap_err().path,
            "preset"
        );
        assert_eq!(
            parse(r#"{"preset":"custom"}"#).validate().unwrap_err().path,
            "custom_names"
        );
        assert_eq!(
            parse(r#"{"custom_names":{}}"#).validate().unwrap_err().path,
            "custom_names"
        );
        assert_eq!(
            parse(r#"{"interval_ms":0}"#).validate().unwrap_err().path,
            "interval_ms"
        );
        assert_eq!(
            parse(r#"{"timeout_ms":0}"#).validate().unwrap_err().path,
            "timeout_ms"
        );
        assert_eq!(
            parse(r#"{"path":"metrics"}"#).validate().unwrap_err().path,
            "path"
        );
        assert!(serde_json::from_str::<ScrapeConfig>(r#"{"interval":5}"#).is_err());
        let huge = format!(r#"{{"interval_ms":{}}}"#, u64::MAX);
        assert_eq!(parse(&huge).validate().unwrap_err().path, "interval_ms");
        assert_eq!(
            parse(r#"{"stale_after_ms":3600001}"#)
                .validate()
                .unwrap_err()
                .path,
            "stale_after_ms"
        );
    }
}
