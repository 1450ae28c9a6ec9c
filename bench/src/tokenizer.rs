//! The `tokenizer.json` the `kv-events` scenario's pods (`inference-sim --tokenizer`) and its
//! precise targets (the pool's `tokenizer.path`) share, so the gateway hashes the token blocks
//! the pods' KV events name.

use std::path::{Path, PathBuf};

/// A tokenizer written into `dir` when the suite is given none (`--tokenizer FILE`); `Ok(None)`
/// when this build has no tokenizer to write: the pods then use the simulator's built-in
/// tokenizer and the precise targets' pool has no `tokenizer` setting.
pub fn trained(_dir: &Path) -> Result<Option<PathBuf>, String> {
    Ok(None)
}
