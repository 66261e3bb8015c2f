//! Shared helpers for the integration tests.

use std::path::PathBuf;

/// `../shared` beside the workspace, when present (it is on developer machines and in CI).
pub fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: ../shared is not present beside the workspace");
        None
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
