//! The scheduler's JSON configuration (embedded by the filter under its `scheduler` key) and the
//! errors that name the offending field. Every key is documented in `scheduler/README.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::prefix::PrefixConfig;

/// The whole scheduler section. Every key is optional; `{}` is the default configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The profile used when a request names none.
    #[serde(default = "default_profile_name")]
    pub default_profile: String,
    /// Named plugin sets; absent means one profile, `default`, with the default plugins.
    #[serde(default)]
    pub profiles: Option<BTreeMap<String, ProfileConfig>>,
    #[serde(default)]
    pub prefix_index: PrefixConfig,
    /// Model names that are LoRA adapters. Names pods report as loaded or loading adapters
    /// count too, so this is only needed before the first scrape.
    #[serde(default)]
    pub lora_adapters: Vec<String>,
    #[serde(default)]
    pub headers: HeaderNames,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            default_profile: default_profile_name(),
            profiles: None,
            prefix_index: PrefixConfig::default(),
            lora_adapters: Vec::new(),
            headers: HeaderNames::default(),
        }
    }
}

fn default_profile_name() -> String {
    "default".into()
}

/// A profile: the filters run in order, the weighted scorers, and the picker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Absent: the default filters (`health`, `stale-metrics`, `hot-spot-guard`); `[]`: none.
    #[serde(default)]
    pub filters: Option<Vec<PluginConfig>>,
    pub scorers: Vec<ScorerConfig>,
    /// Absent: `max-score`.
    #[serde(default)]
    pub picker: Option<PluginConfig>,
}

/// A filter or picker: its registered name and its parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// A scorer: its registered name, its weight in the total, and its parameters.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorerConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

fn default_weight() -> f64 {
    1.0
}

/// Request headers the caller reads for the scheduler (lower case).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderNames {
    /// `critical`, `standard` (default) or `sheddable`.
    pub criticality: String,
    /// Any value; requests with the same value go to the same pod under `session-affinity`.
    pub session: String,
    /// Names the profile to schedule with.
    pub profile: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            criticality: "x-gateway-inference-criticality".into(),
            session: "x-session-id".into(),
            profile: "x-gateway-inference-profile".into(),
        }
    }
}

/// A configuration the scheduler cannot run with: where (a dotted path such as
/// `profiles.default.scorers[1].weight`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error seen from an enclosing config, where this section sits under `key`
    /// (`profiles.x` becomes `scheduler.profiles.x`).
    pub fn nested_in(self, key: &str) -> Self {
        let path = if self.path.is_empty() || self.path == "." {
            key.to_owned()
        } else {
            format!("{key}.{}", self.path)
        };
        ConfigError { path, ..self }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "invalid scheduler config: {}", self.message)
        } else {
            write!(
                f,
                "invalid scheduler config at `{}`: {}",
                self.path, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Deserialises `value` into `T`, reporting errors at `base` + the path inside `value`.
/// `null` (an absent `parameters`) reads as `{}` so parameter defaults apply.
pub fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    base: &str,
) -> Result<T, ConfigError> {
    let empty = serde_json::Value::Object(Default::default());
    let value = if value.is_null() { &empty } else { value };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            base.to_owned()
        } else {
            format!("{base}.{inner}")
        };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

impl SchedulerConfig {
    /// Parses and checks the values that serde alone cannot (ranges, header names).
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        // serde would also read a struct from an array of its fields; a config is an object.
        if !json.trim_start().starts_with('{') {
            return Err(ConfigError::new(
                "",
                "invalid type: the scheduler config must be a JSON object",
            ));
        }
        let mut de = serde_json::Deserializer::from_str(json);
        let config: SchedulerConfig = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| ConfigError::new(e.path().to_string(), e.into_inner().to_string()))?;
        de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The same from an already parsed JSON value (the `scheduler` section of the filter's
    /// config); `null` is the default configuration.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ConfigError> {
        if value.is_null() {
            return Ok(SchedulerConfig::default());
        }
        if !value.is_object() {
            return Err(ConfigError::new(
                "",
                "invalid type: the scheduler config must be a JSON object",
            ));
        }
        let config: SchedulerConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| ConfigError::new(e.path().to_string(), e.into_inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.prefix_index;
        let at_least_one = |name: &str, value: usize| {
            (value >= 1).then_some(()).ok_or_else(|| {
                ConfigError::new(format!("prefix_index.{name}"), "must be at least 1")
            })
        };
        at_least_one("block_size", p.block_size)?;
        at_least_one("max_blocks", p.max_blocks)?;
        for (name, value) in [
            ("capacity_per_pod", p.capacity_per_pod),
            ("max_capacity_per_pod", p.max_capacity_per_pod),
        ] {
            at_least_one(name, value)?;
            // Slots are numbered with 32 bits.
            if value >= u32::MAX as usize {
                return Err(ConfigError::new(
                    format!("prefix_index.{name}"),
                    "must be below 2^32 - 1",
                ));
            }
        }
        if !(p.chars_per_token.is_finite() && p.chars_per_token > 0.0) {
            return Err(ConfigError::new(
                "prefix_index.chars_per_token",
                "must be a number > 0",
            ));
        }
        for (name, value) in [
            ("criticality", &self.headers.criticality),
            ("session", &self.headers.session),
            ("profile", &self.headers.profile),
        ] {
            let valid = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !valid {
                return Err(ConfigError::new(
                    format!("headers.{name}"),
                    format!("{value:?} is not a lower-case header name"),
                ));
            }
        }
        for (i, name) in self.lora_adapters.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::new(
                    format!("lora_adapters[{i}]"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}
