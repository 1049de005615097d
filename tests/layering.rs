//! The layering ARCHITECTURE.md promises: no import cycle between source files. `tools/import_cycles.py`
//! reads every `crate::`/`super::` path of a crate's `src/` (unit-test modules left out) and prints the
//! strongly connected components of the file graph; this test fails naming them, for the root crate
//! and for `crates/condenser-data`, so a cycle cannot come back without anyone noticing. (Between the
//! two crates there can be none: Cargo refuses a dependency cycle.)

use std::path::Path;
use std::process::Command;

#[test]
fn no_import_cycle_between_source_files() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for root in [repo.to_path_buf(), repo.join("crates/condenser-data")] {
        assert!(root.join("src/lib.rs").is_file(), "{}", root.display());
        no_cycle_in(repo, &root);
    }
}

fn no_cycle_in(repo: &Path, root: &Path) {
    let out = Command::new("python3")
        .arg(repo.join("tools/import_cycles.py"))
        .arg(root)
        .output()
        .expect("python3 runs tools/import_cycles.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().last(),
        Some("0"),
        "import cycles between source files of {}:\n{text}",
        root.display()
    );
}
