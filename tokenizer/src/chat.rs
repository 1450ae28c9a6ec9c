//! Chat templates rendered as Hugging Face transformers renders them for vLLM: Jinja with
//! `trim_blocks` and `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now`, a
//! Python-style `tojson`, and Python's string methods (`.strip()`, `.startswith()`, ...).

use std::path::Path;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use scheduler::request::{Content, Message};
use serde::Serialize;

use crate::TokenizerError;

const TEMPLATE: &str = "chat";

/// A compiled chat template with the special tokens it is rendered with.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// What `tokenizer_config.json` says about chat.
pub(crate) struct ChatSettings {
    pub template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
}

/// Reads `chat_template` (a string, or a list of `{name, template}` of which `default` is
/// taken), `bos_token` and `eos_token` (a string or an object with `content`).
pub(crate) fn read_settings(path: &Path) -> Result<ChatSettings, TokenizerError> {
    let fail = |why: String| TokenizerError(format!("{}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    let token = |key: &str| -> Result<String, TokenizerError> {
        match config.get(key) {
            None | Some(serde_json::Value::Null) => Ok(String::new()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(serde_json::Value::Object(o)) => match o.get("content") {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                _ => Err(fail(format!("`{key}` has no string `content`"))),
            },
            Some(_) => Err(fail(format!("`{key}` must be a string or an object"))),
        }
    };
    let template = match config.get("chat_template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => {
            let default = list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
            {
                Some(s) => Some(s.to_owned()),
                None => {
                    return Err(fail(
                        "`chat_template` is a list without a `default` template".into(),
                    ))
                }
            }
        }
        Some(_) => return Err(fail("`chat_template` must be a string or a list".into())),
    };
    Ok(ChatSettings {
        template,
        bos_token: token("bos_token")?,
        eos_token: token("eos_token")?,
    })
}

/// A message as the template sees it: vLLM's "string" content format, where the text parts of
/// a list are joined with newlines and an absent content is empty.
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: String,
}

impl ChatTemplate {
    pub(crate) fn new(
        source: String,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_formatter(python_formatter);
        env.add_template_owned(TEMPLATE, source)
            .map_err(|e| format!("chat_template does not compile: {e:#}"))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    pub(crate) fn render(&self, messages: &[Message<'_>]) -> Result<String, TokenizerError> {
        let mut list = Vec::with_capacity(messages.len());
        for m in messages {
            list.push(TemplateMessage {
                role: &m.role,
                content: message_text(m)?,
            });
        }
        let template = self
            .env
            .get_template(TEMPLATE)
            .map_err(|e| TokenizerError(format!("chat template: {e}")))?;
        template
            .render(minijinja::context! {
                messages => list,
                add_generation_prompt => true,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                tools => Value::from(()),
                documents => Value::from(()),
            })
            .map_err(|e| {
                TokenizerError(format!("chat template cannot render these messages: {e:#}"))
            })
    }
}

/// A message's content as vLLM hands it to a string-format template.
pub(crate) fn message_text(m: &Message<'_>) -> Result<String, TokenizerError> {
    match &m.content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t.to_string()),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (part.kind.as_ref(), &part.text) {
                    ("text", Some(t)) => {
                        if i > 0 {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    (kind, _) => {
                        return Err(TokenizerError(format!(
                            "content part of type {kind:?} is not tokenized (text parts only)"
                        )))
                    }
                }
            }
            Ok(text)
        }
    }
}

/// Prints values as Python's `str()` does (Jinja's output): `True`, `None`, `['a', 1]`.
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => {
            let mut text = String::new();
            python_repr(value, &mut text)?;
            out.write_str(&text)
                .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn python_repr(value: &Value, out: &mut String) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::None | ValueKind::Undefined => out.push_str("None"),
        ValueKind::String => {
            let text = value.as_str().unwrap_or_default();
            let quote = if text.contains('\'') && !text.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(quote);
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(quote);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&item, out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(&key, out)?;
                out.push_str(": ");
                python_repr(&value.get_item(&key)?, out)?;
            }
            out.push('}');
        }
        _ => out.push_str(&value.to_string()),
    }
    Ok(())
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// The current UTC time formatted with the common `strftime` directives (`%d %m %Y %y %b %B
/// %a %A %H %M %S %j %%`), as transformers' `strftime_now` (templates put the date in the
/// system prompt).
fn strftime_now(format: String) -> Result<String, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_time(&format, secs)
}

pub(crate) fn format_time(format: &str, unix_secs: u64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = (unix_secs / 86_400) as i64;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_date(days);
    // 1970-01-01 was a Thursday.
    let weekday = ((days + 3).rem_euclid(7)) as usize;
    let day_of_year = days - days_before_year(year) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let directive = chars.next().unwrap_or('%');
        let piece = match directive {
            'd' => format!("{day:02}"),
            'm' => format!("{month:02}"),
            'Y' => year.to_string(),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'b' => MONTHS[month as usize - 1][..3].to_owned(),
            'B' => MONTHS[month as usize - 1].to_owned(),
            'a' => DAYS[weekday][..3].to_owned(),
            'A' => DAYS[weekday].to_owned(),
            'H' => format!("{:02}", secs_of_day / 3600),
            'M' => format!("{:02}", secs_of_day / 60 % 60),
            'S' => format!("{:02}", secs_of_day % 60),
            'j' => format!("{day_of_year:03}"),
            '%' => "%".to_owned(),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: unsupported directive %{other}"),
                ))
            }
        };
        out.push_str(&piece);
    }
    Ok(out)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days from 1970-01-01 to January 1st of `year`.
fn days_before_year(year: i64) -> i64 {
    (1970..year)
        .map(|y| if is_leap(y) { 366 } else { 365 })
        .sum()
}

/// (year, month 1..=12, day 1..=31) of a day counted from 1970-01-01 (dates from 1970 on).
fn civil_date(mut days: i64) -> (i64, u32, u32) {
    let mut year = 1970;
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let lengths = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    (year, month as u32 + 1, days as u32 + 1)
}

/// `tojson` as transformers defines it: Python's `json.dumps(value, ensure_ascii=False,
/// indent=indent)`, so separators are `", "` and `": "` (`","` between lines when indented).
fn tojson(value: Value, indent: Option<usize>) -> Result<Value, Error> {
    let mut out = String::new();
    write_python_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_python_json(
    value: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    let scalar = |value: &Value| {
        serde_json::to_string(value)
            .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
    };
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map if value.len() != Some(0) => {
            let is_map = value.kind() == ValueKind::Map;
            out.push(if is_map { '{' } else { '[' });
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                if is_map {
                    out.push_str(&scalar(&Value::from(item.to_string()))?);
                    out.push_str(": ");
                    write_python_json(&value.get_item(&item)?, indent, depth + 1, out)?;
                } else {
                    write_python_json(&item, indent, depth + 1, out)?;
                }
            }
            newline(out, depth);
            out.push(if is_map { '}' } else { ']' });
        }
        ValueKind::Seq | ValueKind::Iterable => out.push_str("[]"),
        ValueKind::Map => out.push_str("{}"),
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        _ => out.push_str(&scalar(value)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_strftime() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208.
        let t = 1_721_999_109;
        assert_eq!(format_time("%d %b %Y", t).unwrap(), "26 Jul 2024");
        assert_eq!(
            format_time("%A %B %m/%d/%y %H:%M:%S %j %%", t).unwrap(),
            "Friday July 07/26/24 13:05:09 208 %"
        );
        assert_eq!(format_time("%d %b %Y", 0).unwrap(), "01 Jan 1970");
        assert!(format_time("%Q", 0).is_err());
    }

    #[test]
    fn tojson_writes_python_json() {
        let value = Value::from_serialize(serde_json::json!({"a": [1, "é\n"], "b": {}}));
        assert_eq!(
            tojson(value.clone(), None).unwrap().to_string(),
            r#"{"a": [1, "é\n"], "b": {}}"#
        );
        assert_eq!(
            tojson(value, Some(2)).unwrap().to_string(),
            "{\n  \"a\": [\n    1,\n    \"é\\n\"\n  ],\n  \"b\": {}\n}"
        );
    }
}
