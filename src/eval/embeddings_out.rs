//! Where `condenser encode` writes its vectors, chosen by `--out`:
//! - `FILE.parquet`: `id: utf8`, `embedding: fixed_size_list<float32>[hidden]` (zstd);
//! - `FILE.npy`: a NumPy float32 array (N, hidden) in input order, with the ids one a line in
//!   `FILE.ids.txt` beside it (`numpy.load`, FAISS and most vector tools read these);
//! - `-`: the Parquet stream on stdout, for a pipeline.
//!
//! Files are written under temporary names beside their targets and renamed into place only when
//! complete: a failed or interrupted run leaves neither a partial file under the final name nor a stray
//! temporary.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;

/// The Parquet output's schema: `id: utf8`, `embedding: fixed_size_list<float32>[hidden]`.
pub fn embeddings_schema(hidden: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item_field(), hidden),
            false,
        ),
    ]))
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// The output, checked and (for files) created before any model is loaded.
pub enum Output {
    Parquet(TempOut),
    Npy { data: TempOut, ids: TempOut },
    Stdout,
}

impl Output {
    pub fn open(out: &Path) -> Result<Output> {
        if out.as_os_str() == "-" {
            return Ok(Output::Stdout);
        }
        if out.is_dir() {
            bail!(
                "--out {}: is a folder; name the file to write (e.g. {}/embeddings.parquet)",
                out.display(),
                out.display()
            );
        }
        match out.extension().and_then(|e| e.to_str()) {
            Some("parquet") => Ok(Output::Parquet(TempOut::create(out)?)),
            Some("npy") => {
                let ids = ids_path(out);
                if ids.is_dir() {
                    bail!(
                        "--out {}: the ids are written beside it as {}, which is a folder; move that folder or name another .npy",
                        out.display(),
                        ids.display()
                    );
                }
                Ok(Output::Npy {
                    data: TempOut::create(out)?,
                    ids: TempOut::create(&ids)?,
                })
            }
            _ => bail!(
                "--out {}: name a .parquet or a .npy file (or - for Parquet on stdout); the extension says what is written",
                out.display()
            ),
        }
    }

    /// The writer, once the vector width is known.
    pub fn writer(self, hidden: i32) -> Result<Writer> {
        let parquet = |sink: Box<dyn Write + Send>| -> Result<ArrowWriter<Box<dyn Write + Send>>> {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(
                    parquet::basic::ZstdLevel::try_new(1)?,
                ))
                .set_dictionary_enabled(false)
                .build();
            Ok(ArrowWriter::try_new(
                sink,
                embeddings_schema(hidden),
                Some(props),
            )?)
        };
        Ok(match self {
            Output::Stdout => Writer::Parquet {
                writer: parquet(Box::new(std::io::stdout()))?,
                hidden,
                tmp: None,
            },
            Output::Parquet(tmp) => Writer::Parquet {
                writer: parquet(Box::new(tmp.file.try_clone()?))?,
                hidden,
                tmp: Some(tmp),
            },
            Output::Npy { data, ids } => {
                let mut w = BufWriter::new(data.file.try_clone()?);
                // Room for the real header, written when the row count is known.
                w.write_all(&npy_header(0, hidden))?;
                Writer::Npy {
                    values: w,
                    ids_out: BufWriter::new(ids.file.try_clone()?),
                    rows: 0,
                    hidden,
                    tmps: (data, ids),
                }
            }
        })
    }
}

pub enum Writer {
    Parquet {
        writer: ArrowWriter<Box<dyn Write + Send>>,
        hidden: i32,
        tmp: Option<TempOut>,
    },
    Npy {
        values: BufWriter<File>,
        ids_out: BufWriter<File>,
        rows: u64,
        hidden: i32,
        tmps: (TempOut, TempOut),
    },
}

impl Writer {
    /// Rows of `ids` with their vectors (`values` row-major, `ids.len()` x hidden).
    pub fn write(&mut self, ids: &[String], values: Vec<f32>) -> Result<()> {
        match self {
            Writer::Parquet { writer, hidden, .. } => {
                let emb = FixedSizeListArray::try_new(
                    item_field(),
                    *hidden,
                    Arc::new(Float32Array::from(values)),
                    None,
                )?;
                let batch = RecordBatch::try_new(
                    embeddings_schema(*hidden),
                    vec![
                        Arc::new(StringArray::from_iter_values(ids.iter())) as ArrayRef,
                        Arc::new(emb),
                    ],
                )?;
                writer.write(&batch)?;
            }
            Writer::Npy {
                values: out,
                ids_out,
                rows,
                ..
            } => {
                for id in ids {
                    if id.contains(['\n', '\r']) {
                        bail!("id {id:?} holds a line break: write .parquet, which keeps any id");
                    }
                    writeln!(ids_out, "{id}")?;
                }
                for v in values {
                    out.write_all(&v.to_le_bytes())?;
                }
                *rows += ids.len() as u64;
            }
        }
        Ok(())
    }

    /// Completes the output: the Parquet footer, or the .npy header with the row count; then the
    /// files are renamed into place.
    pub fn finish(self) -> Result<()> {
        match self {
            Writer::Parquet { writer, tmp, .. } => {
                writer.close()?;
                if let Some(tmp) = tmp {
                    tmp.persist()?;
                }
            }
            Writer::Npy {
                values,
                ids_out,
                rows,
                hidden,
                tmps: (data, ids),
            } => {
                let mut file = values.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                file.write_all(&npy_header(rows, hidden))?;
                ids_out.into_inner().map_err(|e| e.into_error())?;
                ids.persist()?;
                data.persist()?;
            }
        }
        Ok(())
    }
}

/// `x.npy` -> `x.ids.txt`.
pub fn ids_path(npy: &Path) -> PathBuf {
    npy.with_extension("ids.txt")
}

/// NPY format 1.0 header of a little-endian float32 (rows, hidden) array, padded to a fixed 128 bytes
/// so it can be rewritten in place once the row count is known.
fn npy_header(rows: u64, hidden: i32) -> Vec<u8> {
    const LEN: usize = 128;
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {hidden}), }}");
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&((LEN - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(LEN - 1, b' ');
    h.push(b'\n');
    h
}

/// One output file under a temporary name beside it, removed unless `persist` renames it into place.
pub struct TempOut {
    tmp: PathBuf,
    out: PathBuf,
    file: File,
    done: bool,
}

impl TempOut {
    /// Checks `out` before any work: a file name whose folder exists, not an existing folder.
    pub fn create(out: &Path) -> Result<TempOut> {
        if out.is_dir() {
            bail!(
                "--out {}: is a folder; name the file to write (e.g. {}/embeddings.parquet)",
                out.display(),
                out.display()
            );
        }
        let name = out
            .file_name()
            .with_context(|| format!("--out {}: has no file name", out.display()))?
            .to_string_lossy();
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            bail!(
                "--out {}: folder {} does not exist",
                out.display(),
                dir.display()
            );
        }
        let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file =
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        Ok(TempOut {
            tmp,
            out: out.to_path_buf(),
            file,
            done: false,
        })
    }

    /// The temporary file, to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Syncs the file and renames it into place.
    pub fn persist(mut self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("{}: cannot sync", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.out).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.out.display()
            )
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_128_bytes_and_names_the_shape() {
        let h = npy_header(12345, 768);
        assert_eq!(h.len(), 128);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 118);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.contains("'shape': (12345, 768)"), "{text}");
        assert!(text.ends_with('\n'));
        assert_eq!(ids_path(Path::new("a/x.npy")), Path::new("a/x.ids.txt"));
    }
}
