//! Integration tests of knock-config through its public API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod errors;
mod files;
mod real_world;
mod roundtrip;
mod spa;
mod toml_format;

use std::path::{Path, PathBuf};

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Writes a secret file readable by its owner only.
pub fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = write(dir, name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
