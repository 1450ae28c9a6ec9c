//! Where the things under test live.

use std::path::PathBuf;

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The Envoy 1.40 binary inside the project's virtualenv (or `$ENVOY_BIN`).
pub fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Envoy binary under {}: run `make venv` (scripts/setup-venv.sh) first",
            lib.display()
        )
    })
}

/// The directory holding `libinference_scheduler.so` (release build).
pub fn module_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("release");
    let so = dir.join("libinference_scheduler.so");
    assert!(
        so.is_file(),
        "{} is missing: run `cargo build --release` first",
        so.display()
    );
    dir
}
