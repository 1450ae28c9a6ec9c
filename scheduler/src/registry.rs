//! Builds plugins by name from their JSON parameters. The built-in plugins are registered by
//! [`Registry::builtin`]; an embedder can add its own before loading a config.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{from_value, ConfigError};
use crate::framework::{Filter, Picker, Scorer};
use crate::plugins::scorers::PreciseBlockIndex;
use crate::plugins::{filters, pickers, scorers, NoParameters};
use crate::prefix::PrefixIndex;

/// The indexes a scheduler's plugins read, owned by the pool the scheduler serves so that they
/// outlive any one configuration.
#[derive(Clone)]
pub struct Indexes {
    /// Routes this gateway made (and answers it saw), per pod.
    pub prefix: Arc<PrefixIndex>,
    /// The pods' own KV-cache events, when the pool follows them.
    pub precise: Option<Arc<dyn PreciseBlockIndex>>,
}

/// What a plugin factory gets: its parameters, where they sit in the config (for errors), and
/// the scheduler's shared resources.
pub struct Params<'a> {
    value: &'a serde_json::Value,
    path: String,
    /// The prefix index every profile of the scheduler shares.
    pub prefix_index: &'a Arc<PrefixIndex>,
    /// The pods' KV-event index, if the pool has one.
    pub precise_index: Option<&'a Arc<dyn PreciseBlockIndex>>,
}

impl Params<'_> {
    /// The parameters as `T`; errors name the field by its full config path.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        from_value(self.value, &self.path)
    }

    /// An error about these parameters as a whole (a value out of range, say).
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.path.clone(), message)
    }

    /// For plugins that take no parameters: only absent, `null` or `{}` are accepted.
    pub fn none(&self) -> Result<(), ConfigError> {
        self.parse::<NoParameters>().map(|_| ())
    }
}

type Factory<T> = Box<dyn Fn(&Params<'_>) -> Result<Box<T>, ConfigError> + Send + Sync>;

/// Plugin factories by name.
pub struct Registry {
    filters: BTreeMap<&'static str, Factory<dyn Filter>>,
    scorers: BTreeMap<&'static str, Factory<dyn Scorer>>,
    pickers: BTreeMap<&'static str, Factory<dyn Picker>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// No plugins at all.
    pub fn empty() -> Self {
        Registry {
            filters: BTreeMap::new(),
            scorers: BTreeMap::new(),
            pickers: BTreeMap::new(),
        }
    }

    /// The built-in plugins.
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        r.register_filter("health", |p| {
            p.none()
                .map(|_| Box::new(filters::Health) as Box<dyn Filter>)
        });
        r.register_filter("stale-metrics", |p| {
            filters::StaleMetrics::from_parameters(p.parse()?)
                .map(|f| Box::new(f) as Box<dyn Filter>)
                .map_err(|m| p.error(m))
        });
        r.register_filter("hot-spot-guard", |p| {
            filters::HotSpotGuard::from_parameters(p.parse()?)
                .map(|f| Box::new(f) as Box<dyn Filter>)
                .map_err(|m| p.error(m))
        });
        r.register_filter("saturation", |p| {
            filters::Saturation::new(Arc::clone(p.prefix_index), p.parse()?)
                .map(|f| Box::new(f) as Box<dyn Filter>)
                .map_err(|m| p.error(m))
        });
        r.register_scorer("queue", |p| {
            scorers::Queue::from_parameters(p.parse()?)
                .map(|s| Box::new(s) as Box<dyn Scorer>)
                .map_err(|m| p.error(m))
        });
        r.register_scorer("kv-cache", |p| {
            p.none()
                .map(|_| Box::new(scorers::KvCache) as Box<dyn Scorer>)
        });
        r.register_scorer("prefix", |p| {
            scorers::Prefix::from_parameters(Arc::clone(p.prefix_index), p.parse()?)
                .map(|s| Box::new(s) as Box<dyn Scorer>)
                .map_err(|m| p.error(m))
        });
        r.register_scorer("precise-prefix", |p| {
            scorers::PrecisePrefix::from_parameters(
                Arc::clone(p.prefix_index),
                p.precise_index.cloned(),
                p.parse()?,
            )
            .map(|s| Box::new(s) as Box<dyn Scorer>)
            .map_err(|m| p.error(m))
        });
        r.register_scorer("lora-affinity", |p| {
            p.none()
                .map(|_| Box::new(scorers::LoraAffinity) as Box<dyn Scorer>)
        });
        r.register_scorer("in-flight", |p| {
            p.none()
                .map(|_| Box::new(scorers::InFlight) as Box<dyn Scorer>)
        });
        r.register_scorer("session-affinity", |p| {
            p.none()
                .map(|_| Box::new(scorers::SessionAffinity) as Box<dyn Scorer>)
        });
        r.register_picker("max-score", |p| {
            p.none()
                .map(|_| Box::new(pickers::MaxScore) as Box<dyn Picker>)
        });
        r.register_picker("weighted-random", |p| {
            p.none()
                .map(|_| Box::new(pickers::WeightedRandom) as Box<dyn Picker>)
        });
        r
    }

    pub fn register_filter(
        &mut self,
        name: &'static str,
        factory: impl Fn(&Params<'_>) -> Result<Box<dyn Filter>, ConfigError> + Send + Sync + 'static,
    ) {
        self.filters.insert(name, Box::new(factory));
    }

    pub fn register_scorer(
        &mut self,
        name: &'static str,
        factory: impl Fn(&Params<'_>) -> Result<Box<dyn Scorer>, ConfigError> + Send + Sync + 'static,
    ) {
        self.scorers.insert(name, Box::new(factory));
    }

    pub fn register_picker(
        &mut self,
        name: &'static str,
        factory: impl Fn(&Params<'_>) -> Result<Box<dyn Picker>, ConfigError> + Send + Sync + 'static,
    ) {
        self.pickers.insert(name, Box::new(factory));
    }

    pub(crate) fn build_filter(
        &self,
        kind: &str,
        parameters: &serde_json::Value,
        path: &str,
        indexes: &Indexes,
    ) -> Result<Box<dyn Filter>, ConfigError> {
        build(&self.filters, "filter", kind, parameters, path, indexes)
    }

    pub(crate) fn build_scorer(
        &self,
        kind: &str,
        parameters: &serde_json::Value,
        path: &str,
        indexes: &Indexes,
    ) -> Result<Box<dyn Scorer>, ConfigError> {
        build(&self.scorers, "scorer", kind, parameters, path, indexes)
    }

    pub(crate) fn build_picker(
        &self,
        kind: &str,
        parameters: &serde_json::Value,
        path: &str,
        indexes: &Indexes,
    ) -> Result<Box<dyn Picker>, ConfigError> {
        build(&self.pickers, "picker", kind, parameters, path, indexes)
    }
}

fn build<T: ?Sized>(
    factories: &BTreeMap<&'static str, Factory<T>>,
    role: &str,
    kind: &str,
    parameters: &serde_json::Value,
    path: &str,
    indexes: &Indexes,
) -> Result<Box<T>, ConfigError> {
    let factory = factories.get(kind).ok_or_else(|| {
        let known: Vec<&str> = factories.keys().copied().collect();
        ConfigError::new(
            format!("{path}.type"),
            format!("unknown {role} {kind:?} (known: {})", known.join(", ")),
        )
    })?;
    factory(&Params {
        value: parameters,
        path: format!("{path}.parameters"),
        prefix_index: &indexes.prefix,
        precise_index: indexes.precise.as_ref(),
    })
}
