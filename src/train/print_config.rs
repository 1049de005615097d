//! `condenser train --print-config`: the effective configuration as TOML, every key under its doc
//! comment. The comments are read from `config.rs` itself (compiled in), so the struct's `///` lines
//! stay the one source; a test checks that every serialized key has one.

use anyhow::{bail, Context, Result};

use super::config::TrainConfig;

const SOURCE: &str = include_str!("config.rs");

/// The fields of `pub struct NAME` in `config.rs`, in order, each with its doc comment lines.
fn fields(name: &str) -> Result<Vec<(String, String, Vec<String>)>> {
    let start = format!("pub struct {name} {{");
    let body = SOURCE
        .split_once(&start)
        .with_context(|| format!("config.rs has no `{start}`"))?
        .1;
    let mut out = Vec::new();
    let mut doc = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line == "}" {
            return Ok(out);
        }
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.trim().to_string());
        } else if let Some(field) = line.strip_prefix("pub ") {
            let (key, ty) = field
                .split_once(':')
                .with_context(|| format!("config.rs: cannot read the field {line:?}"))?;
            let ty = ty.trim().trim_end_matches(',').to_string();
            out.push((key.trim().to_string(), ty, std::mem::take(&mut doc)));
        }
    }
    bail!("config.rs: `{start}` does not end")
}

/// `cfg` as TOML that loads back to `cfg` (`--config`), each key after `# ` lines of its doc comment.
/// An unset optional key is printed commented out, so every key is listed.
pub fn commented_toml(cfg: &TrainConfig) -> Result<String> {
    let value = toml::Value::try_from(cfg).context("the configuration does not serialize")?;
    let root = value
        .as_table()
        .context("the configuration is not a table")?;
    let mut top = String::new();
    let mut sections = String::new();
    for (key, ty, doc) in fields("TrainConfig")? {
        if ty.ends_with("Config") {
            sections.push('\n');
            push_comment(&mut sections, &doc);
            sections.push_str(&format!("[{key}]\n"));
            let table = root
                .get(&key)
                .and_then(|v| v.as_table())
                .with_context(|| format!("[{key}] is not a table"))?;
            for (field, _, doc) in fields(&ty)? {
                push_key(&mut sections, &field, &doc, table.get(&field));
            }
        } else {
            push_key(&mut top, &key, &doc, root.get(&key));
        }
    }
    let command = match cfg.stage {
        super::config::Stage::Finetune => "finetune",
        _ => "train",
    };
    Ok(format!(
        "# condenser {command}: the effective configuration (the {command} defaults, then --config, then --set).\n\
         # Load it with `condenser {command} --config FILE`; --set section.key=value overrides one key.\n\n{top}{sections}"
    ))
}

fn push_comment(out: &mut String, doc: &[String]) {
    for line in doc {
        out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
}

fn push_key(out: &mut String, key: &str, doc: &[String], value: Option<&toml::Value>) {
    push_comment(out, doc);
    match value {
        Some(v) => out.push_str(&format!("{key} = {v}\n")),
        None => out.push_str(&format!("# {key} = (unset)\n")),
    }
}

/// The configuration `condenser train` (`finetune = false`) or `condenser finetune` would run with
/// `--config` and `--set`: each command's own defaults under them. A stage the command does not train
/// is refused, as the command itself would refuse it, naming the command that trains it.
pub fn effective(
    config: Option<&std::path::Path>,
    overrides: &[String],
    finetune: bool,
) -> Result<TrainConfig> {
    use super::config::Stage;
    let base = match finetune {
        true => TrainConfig::finetune_defaults(),
        false => TrainConfig::default(),
    };
    let cfg = TrainConfig::load_over(base, config, overrides)?;
    match (cfg.stage == Stage::Finetune, finetune) {
        (true, false) => bail!("stage = \"finetune\" is trained by `condenser finetune`, whose defaults differ (lr 5e-6, weight decay 0, 3 epochs, 8 queries a batch): use `condenser finetune --print-config`"),
        (false, true) => bail!("`condenser finetune` trains stage \"finetune\", not {:?}: use `condenser train --print-config`", cfg.stage),
        _ => Ok(cfg),
    }
}

/// Prints the effective configuration of `--config` and `--set` on stdout (see `effective`).
pub fn print(config: Option<&std::path::Path>, overrides: &[String], finetune: bool) -> Result<()> {
    use std::io::Write;
    let cfg = effective(config, overrides, finetune)?;
    let text = commented_toml(&cfg)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key the configuration serializes (and every unset optional one) is printed, each right
    /// after a comment line: a field added without a doc comment fails here.
    #[test]
    fn every_key_is_printed_under_a_comment() {
        let cfg = TrainConfig::default();
        let text = commented_toml(&cfg).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let value = toml::Value::try_from(&cfg).unwrap();
        let mut keys: Vec<(Option<String>, String)> = Vec::new();
        for (k, v) in value.as_table().unwrap() {
            match v.as_table() {
                Some(t) => keys.extend(t.keys().map(|f| (Some(k.clone()), f.clone()))),
                None => keys.push((None, k.clone())),
            }
        }
        keys.push((Some("model".into()), "skip_from".into())); // unset by default
        for (section, key) in keys {
            let start = match &section {
                Some(s) => lines.iter().position(|l| *l == format!("[{s}]")).unwrap(),
                None => 0,
            };
            let at = lines[start..]
                .iter()
                .position(|l| {
                    l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))
                })
                .map(|i| i + start)
                .unwrap_or_else(|| panic!("{section:?}.{key} not printed:\n{text}"));
            let comment = lines[at - 1];
            assert!(
                comment.starts_with("# ") && !comment.ends_with("= (unset)"),
                "{section:?}.{key} has no comment line above it:\n{text}"
            );
        }
    }

    #[test]
    fn each_command_prints_its_own_defaults_and_refuses_the_others_stage() {
        let ft = effective(None, &[], true).unwrap();
        assert_eq!(ft, TrainConfig::finetune_defaults());
        assert!(commented_toml(&ft)
            .unwrap()
            .starts_with("# condenser finetune"));
        let e = effective(None, &["stage=finetune".to_string()], false).unwrap_err();
        assert!(
            e.to_string().contains("condenser finetune --print-config"),
            "{e}"
        );
        let e = effective(None, &["stage=condenser".to_string()], true).unwrap_err();
        assert!(
            e.to_string().contains("condenser train --print-config"),
            "{e}"
        );
        assert_eq!(effective(None, &[], false).unwrap(), TrainConfig::default());
    }

    #[test]
    fn the_printed_toml_loads_back_to_the_same_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::default();
        cfg.stage = super::super::config::Stage::Cocondenser;
        cfg.model.skip_from = Some(3);
        cfg.optim.lr = 3e-4;
        cfg.run.precision = crate::model::Precision::Bf16;
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, commented_toml(&cfg).unwrap()).unwrap();
        assert_eq!(TrainConfig::load(Some(&path), &[]).unwrap(), cfg);
    }
}
