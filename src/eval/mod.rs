//! After training: `encode` (CLS embeddings of texts), `eval` (retrieval metrics), `spans` (held-out
//! span-pair retrieval on a prepared corpus).

pub mod embeddings_out;
pub mod encode;
pub mod metrics;
pub mod mine;
pub mod retrieval;
pub mod spans;
