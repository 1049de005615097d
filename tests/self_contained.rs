//! A clone is self-contained: no tracked text file refers to a folder beside the repository (the
//! `shared` folder one level up that the project grew next to) or to the design page that lived there.
//! What those pages said that the project needs is in the repository: ARCHITECTURE.md, DATA.md,
//! bench/reference/ and docs/reference-spec.md.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Built from pieces so that this file does not name them itself.
const NEEDLES: [&str; 2] = [concat!("..", "/shared"), concat!("DESIGN", ".md")];

/// `tests/cli.rs` asserts that no `--help` text mentions these strings, so it names them as string
/// literals, one a line: such a line, exactly, is allowed there and nowhere else.
fn allowed(file: &str, line: &str, needle: &str) -> bool {
    file == "tests/cli.rs" && line.trim() == format!("\"{needle}\",")
}

/// The files git tracks (what a clone holds); outside a git checkout (a source tarball, say), every
/// file under the root but the git-ignored build, data and environment folders.
fn project_files(root: &Path) -> Vec<String> {
    let git = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output();
    if let Ok(out) = git {
        if out.status.success() && !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout)
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    let skip = [".git", "target", ".venv", ".libtorch", "data", "runs"];
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir)).unwrap().flatten() {
            let rel = dir.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir()
                && !(dir.as_os_str().is_empty() && skip.iter().any(|s| rel == Path::new(s)))
            {
                dirs.push(rel);
            } else if kind.is_file() {
                files.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    files
}

#[test]
fn no_project_file_refers_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = project_files(root);
    assert!(
        files.iter().any(|f| f == "Cargo.toml"),
        "the project's files were not found under {}",
        root.display()
    );
    let mut found = Vec::new();
    for file in &files {
        // A tracked file deleted in the work tree, or a link to a folder, is no text to read.
        let Ok(bytes) = std::fs::read(root.join(file)) else {
            continue;
        };
        if bytes.contains(&0) {
            continue; // binary (safetensors, pictures)
        }
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for needle in NEEDLES {
                if line.contains(needle) && !allowed(file, line, needle) {
                    found.push(format!("{file}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} line(s) refer to files that a clone does not hold (cite ARCHITECTURE.md, DATA.md, \
         bench/reference/ or docs/reference-spec.md instead):\n{}",
        found.len(),
        found.join("\n")
    );
}
