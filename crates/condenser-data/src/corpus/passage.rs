//! How a passage with a title reads to the model: "title{joiner}text". Fine-tuning, mining,
//! evaluation and encoding join titles here, so training and evaluation see the same input.

/// A passage as the model reads it: "title text" (or the text when there is no title), exactly as
/// `condenser eval` joins BEIR titles, so training and evaluation see the same input.
pub fn passage_text(title: Option<&str>, text: &str) -> String {
    join_passage(title, text, " ")
}

/// "title{joiner}text", or the text alone when there is no title (`data.title_separator`'s joiner:
/// " " or the tokenizer's separator token, `TitleSeparator::joiner`).
pub fn join_passage(title: Option<&str>, text: &str, joiner: &str) -> String {
    match title {
        Some(t) if !t.is_empty() => format!("{t}{joiner}{text}"),
        _ => text.to_string(),
    }
}
