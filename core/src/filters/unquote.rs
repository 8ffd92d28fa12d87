//! Decodes a quoted filter string: Go string-literal escapes, with `"`, `/`
//! or `|` as the delimiter (the last two so a regular expression can hold
//! double quotes without escaping them).

/// Why a quoted string could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct UnquoteError(pub(super) &'static str);

/// Decodes `quoted`, delimiters included.
pub(super) fn unquote(quoted: &str) -> Result<String, UnquoteError> {
    let syntax = UnquoteError("quote syntax error");
    let mut chars = quoted.chars();
    let (Some(open), Some(close)) = (chars.next(), chars.next_back()) else {
        return Err(syntax);
    };
    if open != close || !matches!(open, '"' | '/' | '|') {
        return Err(syntax);
    }
    let body = chars.as_str();
    if body.contains('\n') {
        return Err(syntax);
    }
    if !body.contains('\\') && !body.contains(open) {
        return Ok(body.to_string());
    }

    // Escapes such as \xff may produce bytes that are not UTF-8 on their
    // own, so decode to bytes and check the whole at the end.
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(ch) = rest.chars().next() {
        rest = &rest[ch.len_utf8()..];
        if ch == open {
            return Err(syntax);
        }
        if ch != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(escape) = rest.chars().next() else {
            return Err(syntax);
        };
        rest = &rest[escape.len_utf8()..];
        match escape {
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\\' => out.push(b'\\'),
            '"' | '/' | '|' if escape == open => out.push(escape as u8),
            'x' => {
                let value = hex_digits(&mut rest, 2).ok_or(UnquoteError("quote syntax error"))?;
                out.push(value as u8);
            }
            'u' | 'U' => {
                let width = if escape == 'u' { 4 } else { 8 };
                let value = hex_digits(&mut rest, width).ok_or(UnquoteError("quote syntax error"))?;
                let ch = char::from_u32(value).ok_or(UnquoteError("invalid unicode code point"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut value = escape as u32 - '0' as u32;
                for _ in 0..2 {
                    let digit = rest
                        .chars()
                        .next()
                        .and_then(|c| c.to_digit(8))
                        .ok_or(UnquoteError("quote syntax error"))?;
                    rest = &rest[1..];
                    value = value * 8 + digit;
                }
                let byte = u8::try_from(value).map_err(|_| UnquoteError("quote syntax error"))?;
                out.push(byte);
            }
            _ => return Err(syntax),
        }
    }
    String::from_utf8(out).map_err(|_| UnquoteError("escapes do not form valid UTF-8"))
}

fn hex_digits(rest: &mut &str, count: usize) -> Option<u32> {
    let digits = rest.get(..count)?;
    let value = u32::from_str_radix(digits, 16).ok()?;
    // from_str_radix accepts a leading '+'; escapes do not.
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    *rest = &rest[count..];
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings() {
        assert_eq!(unquote(r#""abc""#).unwrap(), "abc");
        assert_eq!(unquote("/a.*b/").unwrap(), "a.*b");
        assert_eq!(unquote("|a\"b|").unwrap(), "a\"b");
        assert_eq!(unquote(r#""""#).unwrap(), "");
    }

    #[test]
    fn escapes() {
        assert_eq!(unquote(r#""a\"b""#).unwrap(), "a\"b");
        assert_eq!(unquote(r#""\t\n\\""#).unwrap(), "\t\n\\");
        assert_eq!(unquote(r#""\x41\102\u00e9\U0001F600""#).unwrap(), "AB\u{e9}\u{1F600}");
        assert_eq!(unquote(r"/a\/b/").unwrap(), "a/b");
        assert_eq!(unquote(r"|a\|b|").unwrap(), "a|b");
    }

    #[test]
    fn errors() {
        for bad in [
            "\"",
            "\"abc",
            "\"a\"b\"",
            r#""\/""#,
            r#""\q""#,
            r#""\x4""#,
            r#""\400""#,
            r#""\xff""#,
            r#""\uD800""#,
            "'a'",
            "\"a\nb\"",
        ] {
            assert!(unquote(bad).is_err(), "{bad:?}");
        }
    }
}
