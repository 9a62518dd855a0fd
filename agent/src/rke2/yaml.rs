//! A small YAML writer for the files RKE2 reads.
//!
//! RKE2 reads config.yaml and the manifests with Go's YAML 1.1 parsers, where plain `yes`,
//! `on`, `0600` or `1_000` are not strings. serde_yaml_ng writes YAML 1.2 and leaves such
//! strings plain, so a node name `on` or a branch `yes` would reach RKE2 as a boolean. This
//! writer never emits a plain string: every string value is double-quoted (or a literal
//! block when it spans lines, like a values file), so both YAML versions read the same thing.
//! Output is block style and deterministic (mapping order is insertion order).

use anyhow::{bail, Result};
use serde_yaml_ng::{Mapping, Value};
use std::fmt::Write as _;

/// Writes `doc`, which must be a mapping, as a YAML document.
pub(crate) fn to_string(doc: &Value) -> Result<String> {
    let mut out = String::new();
    match doc {
        Value::Mapping(m) if !m.is_empty() => write_mapping(&mut out, m, 0, false)?,
        _ => bail!("a YAML document written for RKE2 must be a non-empty mapping"),
    }
    Ok(out)
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// `first_inline`: the first key follows a `- ` already written on the current line.
fn write_mapping(out: &mut String, m: &Mapping, indent: usize, first_inline: bool) -> Result<()> {
    for (i, (k, v)) in m.iter().enumerate() {
        let Value::String(key) = k else {
            bail!("mapping keys must be strings, found {k:?}");
        };
        if !(first_inline && i == 0) {
            pad(out, indent);
        }
        out.push_str(&key_text(key));
        out.push(':');
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, indent + 2, false)?;
            }
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent + 2)?;
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2)?;
            }
        }
    }
    Ok(())
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize) -> Result<()> {
    for item in items {
        pad(out, indent);
        out.push('-');
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push(' ');
                write_mapping(out, m, indent + 2, true)?;
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, indent + 2)?;
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + 2)?;
            }
        }
    }
    Ok(())
}

/// Writes a scalar (or an empty collection) and the line break; `content_indent` is where a
/// literal block's lines start.
fn write_scalar(out: &mut String, v: &Value, content_indent: usize) -> Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) if literal_block_ok(s) => {
            write_literal(out, s, content_indent);
            return Ok(());
        }
        Value::String(s) => out.push_str(&double_quoted(s)),
        Value::Sequence(_) => out.push_str("[]"),
        Value::Mapping(_) => out.push_str("{}"),
        Value::Tagged(t) => bail!("YAML tags are not supported here (found !{})", t.tag),
    }
    out.push('\n');
    Ok(())
}

/// A multi-line string goes in a literal block (`|`), byte for byte; the chomping indicator
/// keeps the exact number of trailing line breaks.
fn write_literal(out: &mut String, s: &str, indent: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent);
            out.push_str(line);
        }
        out.push('\n');
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

/// Literal blocks hold only printable text; a leading space or blank first line would need an
/// indentation indicator, so such strings (never a values file) are double-quoted instead.
fn literal_block_ok(s: &str) -> bool {
    s.contains('\n')
        && !s.trim().is_empty()
        && !s.starts_with([' ', '\t', '\n'])
        && s.chars()
            .all(|c| c == '\n' || c == '\t' || (printable(c) && !is_yaml11_break(c)))
}

/// YAML's printable set; anything else must be escaped.
fn printable(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7E}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && c != '\u{FEFF}'
}

/// NEL, LS and PS are line breaks in YAML 1.1.
fn is_yaml11_break(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// A double-quoted scalar: always a string, in YAML 1.1 and 1.2 alike. The result is
/// allocated at its exact final size (it may hold the join token: no stray copies).
pub(crate) fn double_quoted(s: &str) -> String {
    enum Piece {
        Char(char),
        Str(&'static str),
        // Every character above U+FFFF is printable, so \uXXXX covers all escapes.
        Escape(u32),
    }
    fn piece(c: char) -> Piece {
        match c {
            '"' => Piece::Str("\\\""),
            '\\' => Piece::Str("\\\\"),
            '\n' => Piece::Str("\\n"),
            '\t' => Piece::Str("\\t"),
            '\r' => Piece::Str("\\r"),
            c if printable(c) && !is_yaml11_break(c) => Piece::Char(c),
            c => Piece::Escape(c as u32),
        }
    }
    let len = 2 + s
        .chars()
        .map(|c| match piece(c) {
            Piece::Char(c) => c.len_utf8(),
            Piece::Str(e) => e.len(),
            Piece::Escape(_) => 6,
        })
        .sum::<usize>();
    let mut out = String::with_capacity(len);
    out.push('"');
    for c in s.chars() {
        match piece(c) {
            Piece::Char(c) => out.push(c),
            Piece::Str(e) => out.push_str(e),
            Piece::Escape(u) => {
                let _ = write!(out, "\\u{u:04X}");
            }
        }
    }
    out.push('"');
    debug_assert_eq!(out.len(), len);
    out
}

/// Keys are plain when they cannot be read as anything but a string, otherwise quoted.
fn key_text(key: &str) -> String {
    const SPECIAL: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !SPECIAL.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        key.to_string()
    } else {
        double_quoted(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: &Value) -> Value {
        let text = to_string(v).unwrap();
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"))
    }

    #[test]
    fn strings_that_yaml_1_1_would_retype_are_quoted() {
        for s in [
            "yes", "on", "Off", "y", "0600", "1_000", "1:20", "~", "null", "", "1e3", ".inf",
            "- x", "a: b", "#c",
        ] {
            let mut m = Mapping::new();
            m.insert("k".into(), s.into());
            let text = to_string(&Value::Mapping(m.clone())).unwrap();
            assert_eq!(text, format!("k: {}\n", double_quoted(s)), "{s:?}");
            assert!(
                text.starts_with("k: \""),
                "{s:?} must be double-quoted: {text}"
            );
            assert_eq!(roundtrip(&Value::Mapping(m.clone())), Value::Mapping(m));
        }
    }

    #[test]
    fn awkward_strings_survive_a_round_trip() {
        let cases = [
            "plain",
            "tab\there",
            "quote \" and backslash \\",
            "ctrl \u{1} \u{7f} \u{85} \u{2028} \u{feff}",
            "astral \u{1F600}",
            "line\nbreak",
            "two\n\ntrailing\n\n",
            "no trailing\nnewline",
            " leading space\nsecond",
            "\nleading break",
            "a\n  \n",
            "key: value\nlist:\n  - a\n  - b\n",
            "crlf\r\nline",
        ];
        for s in cases {
            let mut m = Mapping::new();
            m.insert("valuesContent".into(), s.into());
            let v = Value::Mapping(m);
            assert_eq!(roundtrip(&v), v, "{s:?}:\n{}", to_string(&v).unwrap());
        }
    }

    #[test]
    fn values_files_become_literal_blocks_byte_for_byte() {
        let values = "# comment\ncontroller:\n  kind: DaemonSet\n\n  hostNetwork: true\n";
        let mut spec = Mapping::new();
        spec.insert("valuesContent".into(), values.into());
        let mut doc = Mapping::new();
        doc.insert("spec".into(), Value::Mapping(spec));
        let text = to_string(&Value::Mapping(doc.clone())).unwrap();
        assert_eq!(
            text,
            "spec:\n  valuesContent: |\n    # comment\n    controller:\n      kind: DaemonSet\n\n      hostNetwork: true\n"
        );
        assert_eq!(roundtrip(&Value::Mapping(doc.clone())), Value::Mapping(doc));
    }

    #[test]
    fn nested_collections_and_scalars() {
        let v: Value = serde_yaml_ng::from_str(
            "a: [1, true, null, 2.5]\nb: {}\nc: []\nd:\n  - x: 1\n    y: [z]\n  - [p, q]\n  - {}\n\"on\": 1\n",
        )
        .unwrap();
        assert_eq!(roundtrip(&v), v);
        let text = to_string(&v).unwrap();
        assert!(text.contains("\"on\": 1\n"), "{text}");
        // `y` is a YAML 1.1 boolean, so even that key is quoted.
        assert!(
            text.contains("  - x: 1\n    \"y\":\n      - \"z\"\n  -\n    - \"p\"\n"),
            "{text}"
        );
    }

    #[test]
    fn refuses_non_mappings_and_non_string_keys() {
        assert!(to_string(&Value::String("x".into())).is_err());
        let v: Value = serde_yaml_ng::from_str("1: a").unwrap();
        assert!(to_string(&v).is_err());
    }
}
