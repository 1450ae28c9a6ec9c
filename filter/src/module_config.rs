//! Everything built once per filter config and shared by all streams on all worker threads.

use crate::config::FilterConfig;

pub struct ModuleConfig {
    pub filter: FilterConfig,
}

impl ModuleConfig {
    /// Builds the module state from the filter's JSON config; errors name the offending field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        Ok(ModuleConfig {
            filter: FilterConfig::from_json(bytes)?,
        })
    }
}
