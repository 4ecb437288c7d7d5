//! Workspace-level tests of jiuzhou: the conformance pass lists and the real models. The tests live in `tests/`;
//! this library holds what they share: where the generated data is.

use std::path::PathBuf;

/// The folder holding generated test data: `$JIUZHOU_CACHE`, else `~/.cache/jiuzhou`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("JIUZHOU_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("jiuzhou")
}

/// A generated data folder: `$VAR` if set, else `cache_dir()/sub`. Panics with the command that makes it if it is
/// missing: these tests must not pass vacuously.
pub fn generated(var: &str, sub: &str, generator: &str) -> PathBuf {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join(sub));
    assert!(
        dir.join(".complete").is_file(),
        "{} is missing or incomplete: run tools/run-tests.sh, or generate it with \
         `$(tools/python-env.sh | tail -1) tools/{generator} {}`",
        dir.display(),
        dir.display()
    );
    dir
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
