//! The pool's settings: the `lb_policy_config` of the cluster's `inference-scheduler`
//! load-balancing policy, as JSON. They describe the pods (how they are scraped, how their
//! prefix cache is modelled), so they belong to the cluster, not to a filter: every filter
//! config that routes to the cluster shares one pool built from them.

use kv_events::KvEventsConfig;
use pods::{AnswerConfig, ScrapeConfig};
use prompt_tokenizer::{PromptTokenizer, TokenizerConfig};
use scheduler::prefix::PrefixConfig;
use scheduler::ConfigError;
use serde::Deserialize;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// How pod metrics are scraped.
    pub pod_metrics: ScrapeConfig,
    /// The prefix index the pool learns routes into.
    pub prefix_index: PrefixConfig,
    /// When a pod failing requests is avoided, and for how long.
    pub pod_errors: AnswerConfig,
    /// Follow the pods' KV-cache events (vLLM's ZeroMQ stream) for the `precise-prefix`
    /// scorer; absent: no subscriptions.
    pub kv_events: Option<KvEventsConfig>,
    /// The model's tokenizer, to compute a request's token ids as the pods do (needed for
    /// `precise-prefix`); absent: every pod is scored approximately.
    pub tokenizer: Option<TokenizerConfig>,
}

impl PoolConfig {
    /// Parses the policy's config. Empty input means all defaults; text after the JSON value
    /// is an error, as is any unknown key. Errors name the field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: PoolConfig = scheduler::parse_object(bytes)?;
        config
            .pod_metrics
            .validate()
            .map_err(|e| e.nested_in("pod_metrics"))?;
        config
            .prefix_index
            .validate()
            .map_err(|e| e.nested_in("prefix_index"))?;
        config
            .pod_errors
            .validate()
            .map_err(|e| e.nested_in("pod_errors"))?;
        if let Some(kv_events) = &config.kv_events {
            kv_events.validate().map_err(|e| e.nested_in("kv_events"))?;
        }
        if let Some(tokenizer) = &config.tokenizer {
            tokenizer.validate().map_err(|e| e.nested_in("tokenizer"))?;
            // Loaded here only to refuse a config whose files are missing or broken (the
            // pool loads its own); the error names the file.
            PromptTokenizer::load(tokenizer)
                .map_err(|e| ConfigError::new("tokenizer.path", e.to_string()))?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        assert_eq!(PoolConfig::from_json(b"").unwrap(), PoolConfig::default());
        assert_eq!(
            PoolConfig::from_json(b" {} ").unwrap(),
            PoolConfig::default()
        );
    }

    #[test]
    fn keys_override_defaults() {
        let c = PoolConfig::from_json(
            br#"{"pod_metrics":{"interval_ms":20},"prefix_index":{"block_size":32}}"#,
        )
        .unwrap();
        assert_eq!(c.pod_metrics.interval_ms, 20);
        assert_eq!(c.prefix_index.block_size, 32);
    }

    #[test]
    fn errors_name_the_field() {
        let path = |json: &str| PoolConfig::from_json(json.as_bytes()).unwrap_err().path;
        assert_eq!(
            path(r#"{"pod_metrics":{"interval_ms":0}}"#),
            "pod_metrics.interval_ms"
        );
        assert_eq!(
            path(r#"{"prefix_index":{"block_size":0}}"#),
            "prefix_index.block_size"
        );
        assert_eq!(path(r#"{"pod_metric":{}}"#), "pod_metric");
        assert_eq!(
            path(r#"{"pod_errors":{"avoid_for_ms":0}}"#),
            "pod_errors.avoid_for_ms"
        );
        assert_eq!(
            path(r#"{"kv_events":{"publish_port":1,"publish_port_offset":1}}"#),
            "kv_events.publish_port_offset"
        );
        assert_eq!(
            path(r#"{"kv_events":{"blocksize":16}}"#),
            "kv_events.blocksize"
        );
        assert_eq!(
            path(r#"{"tokenizer":{"path":"/no/such/tokenizer.json"}}"#),
            "tokenizer.path"
        );
        assert_eq!(path(r#"{} extra"#), "");
        assert_eq!(path(r#"[1]"#), "");
    }
}
