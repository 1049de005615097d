//! After training: `encode` (CLS embeddings of texts). Retrieval evaluation joins here (issue 7).

pub mod encode;
