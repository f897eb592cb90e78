//! Human output: aligned tables and `key: value` blocks, or the api's raw
//! JSON with `--json`.

use std::fmt::Write as _;

use crate::client::Reply;

/// Prints the reply's body as the api sent it (for `--json`). An empty body
/// (204) prints nothing.
pub fn print_raw(reply: &Reply) {
    let body = reply.text.trim_end();
    if !body.is_empty() {
        println!("{body}");
    }
}

/// A table whose columns are as wide as their widest cell; the last column
/// is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_uppercase()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let _ = writeln!(out, "{key:<width$} {v}");
    }
    out
}

/// Prints a table, or a note when there is nothing to show.
pub fn print_table(headers: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        println!("{empty}");
    } else {
        print!("{}", table(headers, rows));
    }
}

pub fn print_key_values(pairs: &[(&str, String)]) {
    print!("{}", key_values(pairs));
}

/// An optional value as text, `-` when absent.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// `text` on one line (runs of whitespace, newlines included, become one
/// space), cut to at most `max` characters with a trailing `…`.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let keep = max.saturating_sub(1);
    let mut out: String = one_line.chars().take(keep).collect();
    out.truncate(out.trim_end().len());
    out.push('…');
    out
}

/// Every line of `text` prefixed with `prefix` (empty lines stay empty).
pub fn indent(text: &str, prefix: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if !line.is_empty() {
            out.push_str(prefix);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_by_their_widest_cell() {
        let rows = vec![
            vec!["a".to_owned(), "10.00".to_owned(), "x".to_owned()],
            vec!["long name".to_owned(), "1.00".to_owned(), "y".to_owned()],
        ];
        assert_eq!(
            table(&["name", "price", "z"], &rows),
            "NAME       PRICE  Z\na          10.00  x\nlong name  1.00   y\n"
        );
    }

    #[test]
    fn key_values_align_values() {
        assert_eq!(
            key_values(&[("id", "1".into()), ("status", "ok".into())]),
            "id:     1\nstatus: ok\n"
        );
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_long_text_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("a\n  b\tc", 10), "a b c");
        assert_eq!(truncate("0123456789", 10), "0123456789");
        assert_eq!(truncate("0123456789a", 10), "012345678…");
        assert_eq!(truncate("abcd efgh", 6), "abcd…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("x".repeat(200).as_str(), 60).chars().count(), 60);
    }

    #[test]
    fn indent_prefixes_non_empty_lines() {
        assert_eq!(indent("a\n\nb", "  "), "  a\n\n  b\n");
        assert_eq!(indent("", "  "), "");
    }
}
