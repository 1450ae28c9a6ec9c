//! The real `openai` Python client streaming from a simulated pod (the project's virtualenv).

use std::path::PathBuf;
use std::process::Command;

mod common;

#[test]
fn the_openai_python_client_streams_from_the_simulator() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = manifest.join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make venv` (scripts/setup-venv.sh) to create the project's virtualenv",
        python.display()
    );
    let sim = common::start(common::fast_config(), 1);
    let base_url = format!("{}/v1", sim.pods()[0].url());
    let output = Command::new(&python)
        .arg(manifest.join("tests/openai_stream.py"))
        .args([&base_url, common::MODEL])
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON summary");
    assert_eq!(seen["completion_stream_tokens"], 16);
    assert_eq!(seen["chat_stream_tokens"], 8);
    assert_eq!(seen["unknown_model_status"], 404);
    assert_eq!(seen["too_long_status"], 400);
}
