//! The few Go standard-library behaviours go-bexpr's messages and values depend on: `%q`
//! quoting, `strconv.Unquote` for string literals, and the `strconv` parsers that coerce a
//! filter's value to its field's type (with their error texts, which reach the client).

use std::fmt::Write as _;

/// Go's `strconv.Quote` (what `%q` prints): printable characters as they are, the usual
/// escapes, `\x`/`\u`/`\U` for the rest.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if !c.is_control() && !c.is_whitespace() => out.push(c),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.Unquote` for the two literal forms the grammar produces: a double-quoted
/// string (Go escapes, no raw newline) or a backquoted raw string (carriage returns dropped).
/// `None` is Go's `invalid syntax`.
pub(crate) fn unquote(literal: &str) -> Option<String> {
    if let Some(raw) = literal.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
        return Some(raw.replace('\r', ""));
    }
    let body = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' => return None,
            '\\' => unescape(&mut chars, &mut out)?,
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    // `\xff` and octal escapes above 0x7f can spell bytes that are not UTF-8: Go keeps them,
    // our values are strings, so they become U+FFFD (no registry value can contain them).
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn unescape(chars: &mut std::str::Chars<'_>, out: &mut Vec<u8>) -> Option<()> {
    let simple = |b: u8, out: &mut Vec<u8>| {
        out.push(b);
        Some(())
    };
    match chars.next()? {
        'a' => simple(7, out),
        'b' => simple(8, out),
        'f' => simple(12, out),
        'n' => simple(b'\n', out),
        'r' => simple(b'\r', out),
        't' => simple(b'\t', out),
        'v' => simple(11, out),
        '\\' => simple(b'\\', out),
        '"' => simple(b'"', out),
        'x' => {
            let v = hex_digits(chars, 2)?;
            simple(v as u8, out)
        }
        c @ ('u' | 'U') => {
            let v = hex_digits(chars, if c == 'u' { 4 } else { 8 })?;
            let ch = char::from_u32(v)?;
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            Some(())
        }
        c @ '0'..='7' => {
            let mut v = c as u32 - '0' as u32;
            for _ in 0..2 {
                let d = chars.next()?.to_digit(8)?;
                v = v * 8 + d;
            }
            if v > 255 {
                return None;
            }
            simple(v as u8, out)
        }
        _ => None,
    }
}

fn hex_digits(chars: &mut std::str::Chars<'_>, n: usize) -> Option<u32> {
    let mut v = 0u32;
    for _ in 0..n {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// A `strconv` parse failure, printed as Go prints a `*strconv.NumError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumError {
    func: &'static str,
    input: String,
    range: bool,
}

impl std::fmt::Display for NumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = if self.range {
            "value out of range"
        } else {
            "invalid syntax"
        };
        write!(
            f,
            "strconv.{}: parsing {}: {why}",
            self.func,
            quote(&self.input)
        )
    }
}

fn syntax(func: &'static str, input: &str) -> NumError {
    NumError {
        func,
        input: input.to_string(),
        range: false,
    }
}

fn range(func: &'static str, input: &str) -> NumError {
    NumError {
        func,
        input: input.to_string(),
        range: true,
    }
}

/// `strconv.ParseUint(s, 0, bits)`: base from the prefix (`0x`, `0o`, `0b`, a leading `0` for
/// octal), underscores between digits.
pub(crate) fn parse_uint(s: &str, bits: u32) -> Result<u64, NumError> {
    const FUNC: &str = "ParseUint";
    if s.is_empty() {
        return Err(syntax(FUNC, s));
    }
    let bytes = s.as_bytes();
    let (base, digits): (u64, &[u8]) = if bytes[0] == b'0' {
        match bytes.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if bytes.len() >= 3 => (2, &bytes[2..]),
            Some(b'o') if bytes.len() >= 3 => (8, &bytes[2..]),
            Some(b'x') if bytes.len() >= 3 => (16, &bytes[2..]),
            _ => (8, &bytes[1..]),
        }
    } else {
        (10, bytes)
    };
    let max: u64 = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let mut underscores = false;
    let mut n: u64 = 0;
    for &c in digits {
        let d = match c {
            b'_' => {
                underscores = true;
                continue;
            }
            b'0'..=b'9' => u64::from(c - b'0'),
            c if c.is_ascii_alphabetic() => u64::from(c.to_ascii_lowercase() - b'a') + 10,
            _ => return Err(syntax(FUNC, s)),
        };
        if d >= base {
            return Err(syntax(FUNC, s));
        }
        n = match n.checked_mul(base).and_then(|n| n.checked_add(d)) {
            Some(v) if v <= max => v,
            _ => return Err(range(FUNC, s)),
        };
    }
    if underscores && !underscore_ok(s) {
        return Err(syntax(FUNC, s));
    }
    Ok(n)
}

/// `strconv.ParseInt(s, 0, bits)`.
pub(crate) fn parse_int(s: &str, bits: u32) -> Result<i64, NumError> {
    const FUNC: &str = "ParseInt";
    let (neg, unsigned) = match s.as_bytes().first() {
        None => return Err(syntax(FUNC, s)),
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        Some(_) => (false, s),
    };
    let magnitude = match parse_uint(unsigned, bits) {
        Ok(v) => v,
        Err(e) if e.range => u64::MAX,
        Err(_) => return Err(syntax(FUNC, s)),
    };
    let cutoff = 1u64 << (bits - 1);
    if !neg && magnitude >= cutoff || neg && magnitude > cutoff {
        return Err(range(FUNC, s));
    }
    Ok(if neg {
        0i64.wrapping_sub_unsigned(magnitude)
    } else {
        magnitude as i64
    })
}

/// `strconv.ParseBool`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, NumError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(syntax("ParseBool", s)),
    }
}

/// Go's rule for `_` in a number literal: only between digits (a base prefix counts as one).
fn underscore_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if let Some(b'+' | b'-') = b.first() {
        b = &b[1..];
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || hex && c.is_ascii_hexdigit() {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_follows_go() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote("tab\there\n"), r#""tab\there\n""#);
        assert_eq!(quote("\u{1}"), r#""\x01""#);
        assert_eq!(quote("héllo"), "\"héllo\"");
        assert_eq!(quote("\u{a0}"), r#""\u00a0""#);
    }

    #[test]
    fn unquote_follows_go() {
        assert_eq!(unquote(r#""a\tb""#).as_deref(), Some("a\tb"));
        assert_eq!(unquote(r#""\x41\101\u00e9""#).as_deref(), Some("AAé"));
        assert_eq!(unquote("`a\\tb\r`").as_deref(), Some("a\\tb"));
        assert_eq!(unquote(r#""a\""#), None, "a trailing backslash");
        assert_eq!(unquote(r#""\q""#), None);
        assert_eq!(unquote(r#""\'""#), None);
        assert_eq!(unquote("\"a\nb\""), None);
        assert_eq!(unquote(r#""\400""#), None);
        assert_eq!(unquote(r#""\ud800""#), None, "a surrogate is not a rune");
    }

    #[test]
    fn integers_parse_like_strconv() {
        assert_eq!(parse_int("42", 64), Ok(42));
        assert_eq!(parse_int("-0x1F", 64), Ok(-31));
        assert_eq!(parse_int("010", 64), Ok(8));
        assert_eq!(parse_int("0b101", 64), Ok(5));
        assert_eq!(parse_int("1_000", 64), Ok(1000));
        assert_eq!(parse_int("0", 64), Ok(0));
        assert_eq!(parse_int("-9223372036854775808", 64), Ok(i64::MIN));
        assert_eq!(
            parse_int("9223372036854775808", 64)
                .unwrap_err()
                .to_string(),
            r#"strconv.ParseInt: parsing "9223372036854775808": value out of range"#
        );
        for bad in ["", "abc", "08", "1_", "_1", "1__0", "0x", "1.5", "+"] {
            assert_eq!(
                parse_int(bad, 64).unwrap_err().to_string(),
                format!("strconv.ParseInt: parsing {}: invalid syntax", quote(bad)),
            );
        }
        assert_eq!(parse_uint("4294967295", 32), Ok(u64::from(u32::MAX)));
        assert_eq!(
            parse_uint("4294967296", 32).unwrap_err().to_string(),
            r#"strconv.ParseUint: parsing "4294967296": value out of range"#
        );
        assert_eq!(
            parse_uint("-1", 64).unwrap_err().to_string(),
            r#"strconv.ParseUint: parsing "-1": invalid syntax"#
        );
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(
            parse_bool("yes").unwrap_err().to_string(),
            r#"strconv.ParseBool: parsing "yes": invalid syntax"#
        );
    }
}
