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
    /// `field `a.b`: message`, or just the message for the config as a whole. Callers say
    /// which config it is (Envoy's log shows `inference-scheduler filter config: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

/// Parses one JSON object into `T`, strictly: the top level must be an object, nothing but
/// white space may follow it, and errors name the field by its dotted path. Empty input (only
/// white space) is `T::default()`.
pub fn parse_object<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ConfigError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Ok(T::default()),
        Some(b'{') => {}
        Some(_) => {
            return Err(ConfigError::new(
                "",
                "invalid type: the config must be a JSON object",
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    de.end()
        .map_err(|e| ConfigError::new("", format!("text after the JSON object: {e}")))?;
    Ok(value)
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
        let config: SchedulerConfig = parse_object(json.as_bytes())?;
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
        self.prefix_index
            .validate()
            .map_err(|e| e.nested_in("prefix_index"))?;
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
