//! What the caller knows about a request besides its body: headers it read for us.

use std::fmt;

use serde::Deserialize;

/// How much a request matters when capacity is short, from the criticality header
/// (`x-gateway-inference-criticality` by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// May be refused (429) when every pod is saturated.
    Sheddable,
    /// The default.
    #[default]
    Standard,
    /// Always routed.
    Critical,
}

impl Criticality {
    /// Parses a header value: `critical`, `standard` or `sheddable`, any case, spaces trimmed.
    pub fn from_header(value: &str) -> Result<Self, UnknownCriticality> {
        let value = value.trim();
        [
            Criticality::Critical,
            Criticality::Standard,
            Criticality::Sheddable,
        ]
        .into_iter()
        .find(|c| c.as_str().eq_ignore_ascii_case(value))
        .ok_or_else(|| UnknownCriticality(value.to_owned()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::Standard => "standard",
            Criticality::Critical => "critical",
        }
    }
}

/// A criticality header value that is none of the known ones; meant for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownCriticality(pub String);

impl fmt::Display for UnknownCriticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown criticality {:?} (expected critical, standard or sheddable)",
            self.0
        )
    }
}

impl std::error::Error for UnknownCriticality {}

/// Per-request facts the caller passes besides the body.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContext<'a> {
    pub criticality: Criticality,
    /// The session header's value, for the session-affinity scorer.
    pub session: Option<&'a str>,
    /// The profile header's value; `None` selects the default profile.
    pub profile: Option<&'a str>,
    /// The prompt's token ids as the model server computes them, when the caller tokenized
    /// it (for the `precise-prefix` scorer; see [`crate::Scheduler::wants_tokens`]).
    pub tokens: Option<&'a [u32]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criticality_header_values() {
        assert_eq!(
            Criticality::from_header("critical"),
            Ok(Criticality::Critical)
        );
        assert_eq!(
            Criticality::from_header(" Sheddable "),
            Ok(Criticality::Sheddable)
        );
        assert_eq!(
            Criticality::from_header("STANDARD"),
            Ok(Criticality::Standard)
        );
        let err = Criticality::from_header("urgent").unwrap_err();
        assert!(err.to_string().contains("\"urgent\""), "{err}");
        assert_eq!(Criticality::default(), Criticality::Standard);
    }
}
