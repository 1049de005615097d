//! Parquet with a text column (Hugging Face `wikimedia/wikipedia`), read row group by row group.

use super::*;

pub(super) fn read_parquet(
    input: &Input,
    opts: &ReadOptions,
    sink: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use ::parquet::arrow::ProjectionMask;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::DataType;

    let name = input.name();
    anyhow::ensure!(
        !input.is_stdin(),
        "{name}: Parquet cannot be read from stdin (it needs a seekable file)"
    );
    let file = std::fs::File::open(&input.path).with_context(|| format!("{name}: cannot open"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{name}: not a readable Parquet file"))?;
    let schema = builder.schema().clone();
    let find = |wanted: &Option<String>, defaults: &[&str]| -> Option<usize> {
        match wanted {
            Some(f) => schema.index_of(f).ok(),
            None => defaults.iter().find_map(|f| schema.index_of(f).ok()),
        }
    };
    let text_idx = find(&opts.text_field, TEXT_FIELDS).with_context(|| {
        format!(
            "{name}: no text column (looked for {:?}; use --text-field)",
            opts.text_field
                .as_deref()
                .map_or(TEXT_FIELDS.to_vec(), |f| vec![f])
        )
    })?;
    let id_idx = find(&opts.id_field, ID_FIELDS);
    let title_idx = schema.index_of("title").ok();
    let mut cols: Vec<usize> = [Some(text_idx), id_idx, title_idx]
        .into_iter()
        .flatten()
        .collect();
    cols.sort();
    cols.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), cols.iter().copied());
    // Rows per batch from the footer: a batch holds about one record's worth of text (at most
    // 1024 rows), so a row group of large cells is not decoded 1024 rows at a time.
    let text_leaf = builder.parquet_schema().columns().iter().position(|c| {
        c.path().parts().first().map(String::as_str) == Some(schema.field(text_idx).name())
    });
    let widest_row = builder
        .metadata()
        .row_groups()
        .iter()
        .filter(|g| g.num_rows() > 0)
        .map(|g| {
            let bytes = text_leaf.map_or(g.total_byte_size(), |c| g.column(c).uncompressed_size());
            bytes.max(0) as u64 / g.num_rows() as u64
        })
        .max()
        .unwrap_or(0);
    let batch_rows = (opts.max_record_bytes as u64 / widest_row.max(1)).clamp(1, 1024) as usize;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()?;
    let mut row = 0u64;
    for batch in reader {
        let batch =
            batch.with_context(|| format!("{name}: corrupt Parquet data after row {row}"))?;
        let col = |idx: usize| batch.column_by_name(schema.field(idx).name()).cloned();
        let strings = |a: &Option<arrow::array::ArrayRef>, i: usize| -> Option<String> {
            let a = a.as_ref()?;
            if a.is_null(i) {
                return None;
            }
            match a.data_type() {
                DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
                DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i).to_string()),
                DataType::Utf8View => Some(a.as_string_view().value(i).to_string()),
                DataType::Int64 => Some(
                    a.as_primitive::<arrow::datatypes::Int64Type>()
                        .value(i)
                        .to_string(),
                ),
                DataType::Int32 => Some(
                    a.as_primitive::<arrow::datatypes::Int32Type>()
                        .value(i)
                        .to_string(),
                ),
                _ => None,
            }
        };
        let (text_col, id_col, title_col) =
            (col(text_idx), id_idx.and_then(col), title_idx.and_then(col));
        for i in 0..batch.num_rows() {
            row += 1;
            let cell_len = |a: &Option<arrow::array::ArrayRef>| -> usize {
                match a.as_ref().filter(|a| !a.is_null(i)) {
                    Some(a) => match a.data_type() {
                        DataType::Utf8 => a.as_string::<i32>().value(i).len(),
                        DataType::LargeUtf8 => a.as_string::<i64>().value(i).len(),
                        DataType::Utf8View => a.as_string_view().value(i).len(),
                        _ => 0,
                    },
                    None => 0,
                }
            };
            // The record's size from the Arrow offsets, before any of it is copied.
            let text_len = cell_len(&text_col) + cell_len(&id_col) + cell_len(&title_col);
            if text_len > opts.max_record_bytes {
                sink(Item::Skip(Skip {
                    reason: SkipReason::RecordTooLarge,
                    detail: format!(
                        "{name}: row {row}: record of {text_len} bytes (text, id and title) exceeds --max-record-bytes {}",
                        opts.max_record_bytes
                    ),
                }))?;
                continue;
            }
            let item = match strings(&text_col, i) {
                Some(text) => Item::Doc(Document {
                    id: strings(&id_col, i).unwrap_or_else(|| format!("{name}:{row}")),
                    title: strings(&title_col, i),
                    text,
                    markup: Markup::Plain,
                }),
                None => Item::Skip(Skip {
                    reason: SkipReason::MissingField,
                    detail: format!("{name}: row {row}: text is null or not a string"),
                }),
            };
            sink(item)?;
        }
    }
    Ok(())
}
