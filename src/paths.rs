//! Where the pinned set-up data lives (`pipelines/fetch_data.py` puts it there).

use std::path::PathBuf;

/// The folder holding the pinned data: `$CONDENSER_DATA` when set, else `data/` of the source tree
/// this binary was built from.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("CONDENSER_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

/// The bert-base-uncased WordPiece `tokenizer.json` (shipped with the MiniLM warm start).
pub fn default_tokenizer() -> PathBuf {
    data_dir().join("minilm").join("tokenizer.json")
}

/// The all-MiniLM-L6-v2 Hugging Face directory used as the demo's warm start.
pub fn minilm_dir() -> PathBuf {
    data_dir().join("minilm")
}
