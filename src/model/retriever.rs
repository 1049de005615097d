//! How a fine-tuned retriever reads passages and scores them, recorded beside its weights
//! (`condenser_retriever.json`) so that `eval`, `mine` and `encode` use what `finetune` trained with:
//! the title separator (`data.title_separator`) and the similarity (`loss.similarity`). A folder
//! without the file (a pre-trained checkpoint, any BERT) reads as "title text" and dot products.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The file in a model folder.
pub const FILE: &str = "condenser_retriever.json";

/// What joins a passage's title and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TitleSeparator {
    /// "title text" (one space).
    #[default]
    Space,
    /// "title[SEP]text" with the tokenizer's separator token, as Tevatron's MS MARCO preprocessing.
    Sep,
}

impl TitleSeparator {
    /// The string put between title and text, for `tok`.
    pub fn joiner(
        self,
        tok: &crate::tokenizer::Tokenizer,
        special: &crate::tokenizer::SpecialIds,
    ) -> Result<String> {
        Ok(match self {
            TitleSeparator::Space => " ".to_string(),
            TitleSeparator::Sep => tok
                .id_to_token(special.sep)
                .with_context(|| {
                    format!(
                        "the tokenizer has no token for its separator id {}",
                        special.sep
                    )
                })?
                .to_string(),
        })
    }
}

/// How query and passage vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    /// Dot product of the [CLS] vectors (Tevatron's convention).
    #[default]
    Dot,
    /// Cosine: the [CLS] vectors normalised to unit length (sentence-transformers' default loss).
    Cos,
}

impl Similarity {
    /// sentence-transformers' `similarity_fn_name`.
    pub fn st_name(self) -> &'static str {
        match self {
            Similarity::Dot => "dot",
            Similarity::Cos => "cosine",
        }
    }

    /// `v` (N, H) as it is scored: unchanged for dot, each row unit length for cosine.
    pub fn prepare(self, v: &tch::Tensor) -> tch::Tensor {
        match self {
            Similarity::Dot => v.shallow_clone(),
            Similarity::Cos => {
                let norm = v
                    .norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
                    .clamp_min(1e-12);
                v / norm
            }
        }
    }
}

/// `condenser_retriever.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieverConfig {
    pub similarity: Similarity,
    pub title_separator: TitleSeparator,
}

impl RetrieverConfig {
    /// The model folder's file, or the defaults when it has none.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(RetrieverConfig::default());
        }
        let bytes =
            std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: not a retriever configuration (expected {{\"similarity\": \"dot\"|\"cos\", \"title_separator\": \"space\"|\"sep\"}})",
                path.display()
            )
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("JSON serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_the_file_reads_as_before_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            RetrieverConfig::read(dir.path()).unwrap(),
            RetrieverConfig::default()
        );
        let cfg = RetrieverConfig {
            similarity: Similarity::Cos,
            title_separator: TitleSeparator::Sep,
        };
        std::fs::write(dir.path().join(FILE), cfg.to_json()).unwrap();
        assert_eq!(RetrieverConfig::read(dir.path()).unwrap(), cfg);
        std::fs::write(dir.path().join(FILE), br#"{"similarity": "l2"}"#).unwrap();
        let e = format!("{:#}", RetrieverConfig::read(dir.path()).unwrap_err());
        assert!(e.contains(FILE), "{e}");
    }

    #[test]
    fn cosine_scores_unit_vectors() {
        let v = tch::Tensor::from_slice2(&[[3.0f32, 4.0], [0.0, 2.0]]);
        let u = Similarity::Cos.prepare(&v);
        let got = Vec::<Vec<f32>>::try_from(&u).unwrap();
        let want = [[0.6f32, 0.8], [0.0, 1.0]];
        for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        let dot = Vec::<Vec<f32>>::try_from(&Similarity::Dot.prepare(&v)).unwrap();
        assert_eq!(dot[0], vec![3.0f32, 4.0]);
    }
}
