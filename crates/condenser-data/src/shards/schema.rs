//! The Arrow schema of a shard row: one document, segmented into spans.
//! `schemas/shard.schema.json` is generated from here; a test keeps the two in sync.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub const DOC_ID: &str = "doc_id";
pub const SPANS: &str = "spans";
pub const NUM_TOKENS: &str = "num_tokens";

/// `doc_id: utf8`, `spans: list<list<int32>>` (token ids without special tokens), `num_tokens: int32`.
pub fn shard_schema() -> SchemaRef {
    let span = Field::new("item", DataType::Int32, false);
    let spans = Field::new("item", DataType::List(Arc::new(span)), false);
    Arc::new(Schema::new(vec![
        Field::new(DOC_ID, DataType::Utf8, false),
        Field::new(SPANS, DataType::List(Arc::new(spans)), false),
        Field::new(NUM_TOKENS, DataType::Int32, false),
    ]))
}

/// Whether `schema` is the shard schema: the same columns, types and nullability, whatever the
/// list fields are named (`item` here and in arrow-rs, `element` from pyarrow and the Parquet
/// specification's standard layout).
pub fn is_shard_schema(schema: &Schema) -> bool {
    fn same(a: &DataType, b: &DataType) -> bool {
        match (a, b) {
            (DataType::List(x), DataType::List(y)) => {
                x.is_nullable() == y.is_nullable() && same(x.data_type(), y.data_type())
            }
            _ => a == b,
        }
    }
    let want = shard_schema();
    schema.fields().len() == want.fields().len()
        && schema.fields().iter().zip(want.fields()).all(|(f, w)| {
            f.name() == w.name()
                && f.is_nullable() == w.is_nullable()
                && same(f.data_type(), w.data_type())
        })
}

/// The schema as the JSON document kept in `schemas/shard.schema.json`.
pub fn schema_json() -> serde_json::Value {
    fn ty(dt: &DataType) -> serde_json::Value {
        match dt {
            DataType::List(f) => {
                serde_json::json!({"list": {"name": f.name(), "nullable": f.is_nullable(), "type": ty(f.data_type())}})
            }
            other => serde_json::Value::String(format!("{other}").to_lowercase()),
        }
    }
    let fields: Vec<_> = shard_schema()
        .fields()
        .iter()
        .map(|f| serde_json::json!({"name": f.name(), "nullable": f.is_nullable(), "type": ty(f.data_type())}))
        .collect();
    serde_json::json!({
        "description": "One row per document: its spans of token ids (no special tokens), each at most max_len - 2 long.",
        "format": "parquet, zstd level 3, no dictionary, no statistics on spans, row groups bounded by bytes",
        "fields": fields,
    })
}

/// A segmented document: what one shard row holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmented {
    pub doc_id: String,
    pub spans: Vec<Vec<u32>>,
    pub num_tokens: usize,
}
