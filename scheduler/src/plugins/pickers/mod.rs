//! Pickers: highest score (the default), or weighted random.

mod max_score;
mod weighted_random;

pub use max_score::MaxScore;
pub use weighted_random::WeightedRandom;
