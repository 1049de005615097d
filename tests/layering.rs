//! The layering ARCHITECTURE.md promises: no import cycle between source files. `tools/import_cycles.py`
//! reads every `crate::`/`super::` path of `src/` (unit-test modules left out) and prints the strongly
//! connected components of the file graph; this test fails naming them, so a cycle cannot come back
//! without anyone noticing.

use std::path::Path;
use std::process::Command;

#[test]
fn no_import_cycle_between_source_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tools/import_cycles.py"))
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
        "import cycles between source files:\n{text}"
    );
}
