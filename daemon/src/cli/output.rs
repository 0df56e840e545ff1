//! How commands print: text for people, JSON for scripts.
//!
//! `--format json` is one global flag (`neurolink --format json auth list` and `neurolink auth
//! list --format json` are the same). Results go to stdout, warnings and progress to stderr. A
//! failure is `error: <message>` on stderr in text, and `{"error": {"message": ...}}` on stdout in
//! JSON, with exit status 1 either way: a script reads one JSON document from stdout whatever
//! happened.

use std::process::ExitCode;
use std::sync::OnceLock;

use clap::ValueEnum;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

static FORMAT: OnceLock<OutputFormat> = OnceLock::new();

/// Set once, from the command line.
pub fn set(format: OutputFormat) {
    let _ = FORMAT.set(format);
}

/// The chosen format (text until set).
pub fn format() -> OutputFormat {
    FORMAT.get().copied().unwrap_or(OutputFormat::Text)
}

pub fn json_wanted() -> bool {
    format() == OutputFormat::Json
}

/// Print one JSON document on stdout.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Report a failure in the chosen format; exit status 1.
pub fn fail(e: impl std::fmt::Display) -> ExitCode {
    fail_with(e, json!({}))
}

/// Report a failure with more fields for scripts (merged into the `error` object).
pub fn fail_with(e: impl std::fmt::Display, extra: Value) -> ExitCode {
    // `{:#}` shows an anyhow error's causes too; for other types it is their plain message.
    let message = format!("{e:#}");
    if json_wanted() {
        let mut error = json!({ "message": message });
        if let (Some(error), Value::Object(extra)) = (error.as_object_mut(), extra) {
            error.extend(extra);
        }
        print_json(&json!({ "error": error }));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::FAILURE
}

/// A command's result: `text` for people, `value` for scripts; exit status 0.
pub fn done(text: impl std::fmt::Display, value: Value) -> ExitCode {
    if json_wanted() {
        print_json(&value);
    } else {
        let text = text.to_string();
        if !text.is_empty() {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }
    ExitCode::SUCCESS
}
