//! The `tokenizer.json` the `kv-events` scenario's pods (`inference-sim --tokenizer`) and its
//! precise targets (the pool's `tokenizer.path`) share, so the gateway hashes the token blocks
//! the pods' KV events name.

use std::path::{Path, PathBuf};

/// The fixture tokenizer (`prompt-tokenizer`'s trained byte-level BPE, the same file on every
/// run) written into `dir`, for when the suite is given none (`--tokenizer FILE`).
pub fn trained(dir: &Path) -> Result<Option<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Some(prompt_tokenizer::write_trained_tokenizer(dir)))
}
