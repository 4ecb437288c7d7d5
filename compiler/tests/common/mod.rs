//! Helpers shared by the CLI integration tests: the bundled fixture, per-test temp folders, running the
//! `jiuzhou` binary, and the clean-error check (one `error:` line, non-zero exit, no panic).
#![allow(dead_code)] // Each test crate uses its own subset.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A file of the bundled tiny CNN fixture.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tiny_cnn")
        .join(name)
}

/// A fresh folder under the temp dir for one test (`suite` keeps test crates apart).
pub fn tmp_dir(suite: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jiuzhou-{suite}-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a run of the binary printed, and whether it succeeded.
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `jiuzhou` binary with `args`.
pub fn jiuzhou(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_jiuzhou"))
        .args(args)
        .output()
        .expect("the binary runs");
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a clean failure: non-zero exit, exactly one `error:` line on stderr that contains every `needle`.
pub fn assert_clean_error(o: &Outcome, needles: &[&str]) {
    assert!(!o.ok, "expected failure, got success:\n{}", o.stdout);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one error line, got:\n{}",
        o.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "not an error line: {}",
        lines[0]
    );
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("backtrace"),
        "{}",
        o.stderr
    );
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks `{n}`: {}", lines[0]);
    }
}
