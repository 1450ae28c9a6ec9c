//! Reading the deployment manifests under deploy/: rendered by kubectl's kustomize, parsed
//! into JSON (PyYAML from .venv does the parsing: no YAML crate in the workspace).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::paths::repo_root;

/// Runs a command to completion; panics naming it when it cannot start.
pub fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    command
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (run `make test`, which installs it)"))
}

/// `kubectl kustomize DIR` (relative to the repository root), as YAML.
pub fn render(dir: &str) -> String {
    let out = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join(dir)));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The documents of a multi-document YAML text, as JSON; panics on a syntax error.
pub fn parse_yaml(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(repo_root().join(".venv/bin/python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 in .venv (run `make venv`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not YAML:\n{yaml}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The object of `kind` named `name`; panics when there is none.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The only object of `kind`; panics when there is not exactly one.
pub fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}
