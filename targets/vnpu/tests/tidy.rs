//! Tidy checks on the crate's own sources: every module opens with `//!` docs, and no debugging output is left in.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_module_is_documented_and_quiet() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("build.rs")];
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    assert!(files.len() > 10);
    let forbidden = [
        concat!("dbg", "!("),
        concat!("println", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} has no module docs",
            file.display()
        );
        // The build script talks to cargo by printing `cargo:` lines.
        let is_build_script = file.ends_with("build.rs");
        for bad in forbidden {
            if is_build_script && bad.starts_with("println") {
                continue;
            }
            assert!(!text.contains(bad), "{} contains {bad}", file.display());
        }
    }
}
