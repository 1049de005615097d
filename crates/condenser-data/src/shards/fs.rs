//! Small file-system helpers the shard writer, the manifest and the checkpoints share: a folder's
//! fsync (so a rename into it is durable) and lower-case hex of a digest.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// Syncs folder `dir` (`""` is the current folder), so the entries renamed into it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot fsync folder", dir.display()))
}

/// Lower-case hex of `bytes` (a SHA-256 as manifests write it).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
