//! Local validation of an activation-code CSV file and the chunks it is sent
//! in. The whole file is checked before anything is sent, with the same rules
//! as the api: header `code,expires_on`; codes of 1..=64 visible ASCII
//! characters; `expires_on` empty, an RFC 3339 timestamp, or `YYYY-MM-DD`.

use std::io::Read;

use chrono::{DateTime, NaiveDate};

pub const HEADER: [&str; 2] = ["code", "expires_on"];
const MAX_CODE_LEN: usize = 64;

/// One validated row, with `expires_on` exactly as the file had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub code: String,
    pub expires_on: String,
}

/// Reads and validates every row; the message names the first bad row.
///
/// Rows are numbered from 1 after the header; the file line is given too.
pub fn parse_codes(input: impl Read) -> Result<Vec<CodeRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut records = reader.records();
    let header = match records.next() {
        None => return Err("the file is empty; expected the header `code,expires_on`".to_owned()),
        Some(r) => r.map_err(|e| format!("line 1: {}", csv_error_text(&e)))?,
    };
    let names: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == 0 {
                f.trim_start_matches('\u{feff}').trim()
            } else {
                f.trim()
            }
        })
        .collect();
    if names != HEADER {
        return Err(format!(
            "line 1: the header must be `code,expires_on`, found `{}`",
            names.join(",")
        ));
    }
    let mut rows = Vec::new();
    for (i, record) in records.enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line()).unwrap_or_default();
            format!("row {row} (line {line}): {}", csv_error_text(&e))
        })?;
        let line = record.position().map(|p| p.line()).unwrap_or_default();
        let at = format!("row {row} (line {line})");
        if record.len() != 2 {
            return Err(format!(
                "{at}: expected 2 fields (code,expires_on), found {}",
                record.len()
            ));
        }
        let code = &record[0];
        check_code(code).map_err(|e| format!("{at}: {e}"))?;
        let expires_on = &record[1];
        if !is_valid_expiry(expires_on) {
            return Err(format!(
                "{at}: expires_on {expires_on:?} must be empty, an RFC 3339 timestamp \
                 (2027-01-31T00:00:00Z) or a date (2027-01-31)"
            ));
        }
        rows.push(CodeRow {
            code: code.to_owned(),
            expires_on: expires_on.to_owned(),
        });
    }
    if rows.is_empty() {
        return Err("the file has a header but no codes".to_owned());
    }
    Ok(rows)
}

fn csv_error_text(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
        _ => e.to_string(),
    }
}

/// The code itself is not echoed: activation codes are worth money.
fn check_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("the code is empty".to_owned());
    }
    if code.len() > MAX_CODE_LEN {
        return Err(format!(
            "the code is {} characters long; at most {MAX_CODE_LEN} are allowed",
            code.chars().count()
        ));
    }
    if let Some(pos) = code.chars().position(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "character {} of the code is not visible ASCII (no spaces, control or non-ASCII characters)",
            pos + 1
        ));
    }
    Ok(())
}

/// Empty (never expires), RFC 3339, or `YYYY-MM-DD`.
pub fn is_valid_expiry(s: &str) -> bool {
    s.is_empty() || DateTime::parse_from_rfc3339(s).is_ok() || is_plain_date(s)
}

fn is_plain_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// One request body: the header line, then the rows, quoted where needed.
pub fn csv_chunk(rows: &[CodeRow]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let write = |w: &mut csv::Writer<Vec<u8>>| -> csv::Result<()> {
        w.write_record(HEADER)?;
        for r in rows {
            w.write_record([r.code.as_str(), r.expires_on.as_str()])?;
        }
        w.flush()?;
        Ok(())
    };
    write(&mut w).expect("writing CSV to memory cannot fail");
    let bytes = w.into_inner().expect("flushed above");
    String::from_utf8(bytes).expect("validated rows are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<CodeRow>, String> {
        parse_codes(s.as_bytes())
    }

    #[test]
    fn a_valid_file_with_every_expiry_form_parses() {
        let rows = parse(
            "\u{feff}code,expires_on\nABCD-1234,\nEFGH-5678,2027-01-31\n\"X,Y\",2027-01-31T10:00:00Z\nZ,2027-01-31T10:00:00+02:00\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[2].code, "X,Y");
        assert_eq!(rows[1].expires_on, "2027-01-31");
    }

    #[test]
    fn a_missing_or_wrong_header_is_reported() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("code\nA\n").unwrap_err().contains("header"));
        assert!(parse("expires_on,code\n,A\n")
            .unwrap_err()
            .contains("header"));
        assert!(parse("code,expires_on\n").unwrap_err().contains("no codes"));
    }

    #[test]
    fn bad_codes_name_their_row_and_line() {
        let e = parse("code,expires_on\nOK,\n,\n").unwrap_err();
        assert!(e.starts_with("row 2 (line 3)"), "{e}");
        assert!(e.contains("empty"));
        let long = "X".repeat(65);
        let e = parse(&format!("code,expires_on\n{long},\n")).unwrap_err();
        assert!(e.starts_with("row 1 (line 2)") && e.contains("65"), "{e}");
        assert!(parse(&format!("code,expires_on\n{},\n", "X".repeat(64))).is_ok());
        let e = parse("code,expires_on\nA,\nHAS SPACE,\n").unwrap_err();
        assert!(e.starts_with("row 2") && e.contains("character 4"), "{e}");
        assert!(!e.contains("HAS SPACE"), "codes are not echoed: {e}");
        assert!(parse("code,expires_on\nCAFÉ,\n")
            .unwrap_err()
            .contains("visible ASCII"));
        assert!(parse("code,expires_on\nA\tB,\n").is_err());
    }

    #[test]
    fn bad_field_counts_and_dates_are_reported() {
        let e = parse("code,expires_on\nA,,extra\n").unwrap_err();
        assert!(e.contains("expected 2 fields"), "{e}");
        assert!(parse("code,expires_on\nA\n")
            .unwrap_err()
            .contains("expected 2 fields"));
        for bad in [
            "2027-1-31",
            "2027-02-30",
            "31/01/2027",
            "tomorrow",
            " 2027-01-31",
            "2027-01-31T10:00:00",
        ] {
            let e = parse(&format!("code,expires_on\nA,{bad}\n")).unwrap_err();
            assert!(e.starts_with("row 1 (line 2): expires_on"), "{bad}: {e}");
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_row() {
        let mut bytes = b"code,expires_on\nA,\n".to_vec();
        bytes.extend_from_slice(b"\xff\xfe,\n");
        let e = parse_codes(&bytes[..]).unwrap_err();
        assert!(e.starts_with("row 2") && e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn chunks_repeat_the_header_and_quote_when_needed() {
        let rows = vec![
            CodeRow {
                code: "A".into(),
                expires_on: String::new(),
            },
            CodeRow {
                code: "B,\"C".into(),
                expires_on: "2027-01-31".into(),
            },
        ];
        assert_eq!(csv_chunk(&rows[..1]), "code,expires_on\nA,\n");
        let body = csv_chunk(&rows);
        assert_eq!(body, "code,expires_on\nA,\n\"B,\"\"C\",2027-01-31\n");
        assert_eq!(parse(&body).unwrap(), rows);
    }
}
