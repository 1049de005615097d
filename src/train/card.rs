//! The model card of a run's final model (`OUT/final/README.md`), in the Hugging Face convention: YAML
//! front matter (`library_name`, `base_model` where known, `pipeline_tag: feature-extraction`, `tags`),
//! then how the model was trained: the command, the data by name and count, the steps and the
//! effective configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::{Stage, TrainConfig};

/// What the card says about a run.
pub struct Card<'a> {
    /// The run folder's name: the card's title.
    pub name: &'a str,
    pub cfg: &'a TrainConfig,
    /// The command line, as given.
    pub command: Vec<String>,
    /// The warm start (or the checkpoint a resumed run started from).
    pub init: &'a Path,
    /// One line per data source: its name and count.
    pub data: &'a [String],
    pub steps: u64,
    pub total_steps: u64,
    pub world_size: usize,
    /// What evaluation while training found (finetune --eval-corpus), if it ran.
    pub evaluation: Option<String>,
}

/// The init folder's Hugging Face hub id, where it has one: `config.json`'s `_name_or_path` (what
/// transformers' `save_pretrained` records, and what its own model cards give as `base_model`) when
/// it reads as `owner/name` rather than a local path. Folders condenser wrote carry none.
pub fn base_model(init: &Path) -> Option<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(init.join("config.json")).ok()?).ok()?;
    let name = v.get("_name_or_path")?.as_str()?.trim();
    let parts: Vec<&str> = name.split('/').collect();
    let hub_like = parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.starts_with('.')
        });
    (hub_like && !Path::new(name).exists()).then(|| name.to_string())
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The card's text.
pub fn render(c: &Card) -> String {
    let stage = c.cfg.stage;
    let (library, what) = match stage {
        Stage::Finetune => (
            "sentence-transformers",
            "a bi-encoder retriever fine-tuned on labelled queries and passages (`condenser finetune`)",
        ),
        Stage::Condenser => (
            "transformers",
            "a BERT encoder pre-trained with the Condenser objective (`condenser train`)",
        ),
        Stage::Cocondenser => (
            "transformers",
            "a BERT encoder pre-trained with the coCondenser objective (`condenser train`)",
        ),
    };
    let stage_tag = match stage {
        Stage::Finetune => "dense-retrieval",
        Stage::Condenser => "condenser",
        Stage::Cocondenser => "cocondenser",
    };
    let base = base_model(c.init);
    let mut y = String::from("---\n");
    y.push_str(&format!("library_name: {}\n", yaml_str(library)));
    if let Some(b) = &base {
        y.push_str(&format!("base_model: {}\n", yaml_str(b)));
    }
    y.push_str("pipeline_tag: \"feature-extraction\"\n");
    y.push_str("tags:\n");
    for t in [
        "condenser",
        stage_tag,
        "sentence-transformers",
        "feature-extraction",
    ]
    .iter()
    .collect::<std::collections::BTreeSet<_>>()
    {
        y.push_str(&format!("- {}\n", yaml_str(t)));
    }
    y.push_str("---\n\n");

    let similarity = match (stage, c.cfg.loss.similarity) {
        (Stage::Finetune, crate::model::retriever::Similarity::Dot) => {
            "dot product of the [CLS] vectors (as it was trained)"
        }
        (Stage::Finetune, crate::model::retriever::Similarity::Cos) => {
            "cosine of the [CLS] vectors (as it was trained; sentence-transformers loads a Normalize module)"
        }
        _ => "dot product of the [CLS] vectors (before fine-tuning, a starting point rather than a retriever)",
    };
    let mut b = String::new();
    b.push_str(&format!(
        "# {}\n\n{} written by condenser {}: {what}. The embedding of a text is the last layer's [CLS] \
         vector (no pooler); texts are compared by the {similarity}.\n\n",
        c.name,
        match stage {
            Stage::Finetune => "An encoder",
            _ => "A checkpoint",
        },
        env!("CARGO_PKG_VERSION")
    ));
    b.push_str("## Training\n\n");
    let cmd: Vec<String> = c.command.iter().map(|a| shell_word(a)).collect();
    b.push_str(&format!("- Command: `{}`\n", cmd.join(" ")));
    b.push_str(&format!(
        "- Initialised from: `{}`{}\n",
        c.init.display(),
        base.as_ref()
            .map(|b| format!(" (`{b}`)"))
            .unwrap_or_default()
    ));
    b.push_str(&format!(
        "- Stage: `{}`\n",
        format!("{stage:?}").to_lowercase()
    ));
    for d in c.data {
        b.push_str(&format!("- Data: {d}\n"));
    }
    b.push_str(&format!(
        "- Steps: {} of {} optimizer steps, {} process(es), {} {} per process a step\n",
        c.steps,
        c.total_steps,
        c.world_size,
        c.cfg.data.batch_size,
        match stage {
            Stage::Finetune => "queries",
            Stage::Cocondenser => "documents",
            Stage::Condenser => "spans",
        }
    ));
    b.push_str(&format!(
        "- Learning rate {:e} (linear warm-up over {} of the steps, then linear decay), seed {}\n",
        c.cfg.optim.lr, c.cfg.optim.warmup_ratio, c.cfg.run.seed
    ));
    b.push_str("- Training curves: `metrics.jsonl` in the run folder\n\n");
    match &c.evaluation {
        Some(e) => b.push_str(&format!("## Evaluation\n\n{e}\n\n")),
        None => b.push_str(
            "## Evaluation\n\nNone was run during training; `condenser eval --model FOLDER ...` scores it.\n\n",
        ),
    }
    b.push_str("## Configuration\n\n```toml\n");
    b.push_str(&c.cfg.to_toml());
    if !b.ends_with('\n') {
        b.push('\n');
    }
    b.push_str("```\n\n## Use\n\n```python\nfrom sentence_transformers import SentenceTransformer\n\
                model = SentenceTransformer(\"PATH\")\nvectors = model.encode([\"a passage\"])\n```\n");
    y + &b
}

/// `a` quoted for a POSIX shell when it needs it.
fn shell_word(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    match plain {
        true => a.to_string(),
        false => format!("'{}'", a.replace('\'', "'\\''")),
    }
}

/// Writes `dir/README.md` (a temporary file renamed into place).
pub fn write(dir: &Path, card: &Card) -> Result<PathBuf> {
    let path = dir.join("README.md");
    let tmp = dir.join(format!(".README.md.tmp-{}", std::process::id()));
    std::fs::write(&tmp, render(card))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .with_context(|| format!("{}: cannot write the model card", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_model_only_for_hub_names() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                serde_json::json!({"_name_or_path": name}).to_string(),
            )
            .unwrap();
            base_model(dir.path())
        };
        assert_eq!(
            with("bert-base/uncased").as_deref(),
            Some("bert-base/uncased")
        );
        assert_eq!(with("/models/bert"), None);
        assert_eq!(with("runs/c/final"), None);
        assert_eq!(with("bert-base-uncased"), None);
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert_eq!(base_model(dir.path()), None);
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("optim.lr=1e-4"), "optim.lr=1e-4");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
