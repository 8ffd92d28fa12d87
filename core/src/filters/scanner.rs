//! Splits a filter string into tokens.
//!
//! The token rules are containerd's, including their quirks, so that a
//! filter means the same thing (or fails the same way) against either
//! daemon: `/` and `|` open a quoted string wherever a token starts (so
//! `topic==/a/b` is an error and `topic=="/a/b"` is not), `,` and `.` are
//! always separators, and a token directly after an operator is a value,
//! which may contain `.` and `/`.

/// One token and where it started (a byte offset into the input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token<'a> {
    /// End of input.
    Eof,
    /// A quoted string, delimiters included.
    Quoted(&'a str),
    /// An unquoted value after an operator.
    Value(&'a str),
    /// A field name: letters, digits and `_`.
    Field(&'a str),
    /// `,` or `.`.
    Separator(char),
    /// A run of `=`, `!` and `~`.
    Operator(&'a str),
    /// Something malformed; the scanner's error says what.
    Illegal,
    /// A character no rule accepts here.
    Other(char),
}

/// What the scanner's next character is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Peek {
    Eof,
    Char(char),
}

pub(super) struct Scanner<'a> {
    input: &'a str,
    /// Start of the character last read.
    pos: usize,
    /// End of the character last read.
    ppos: usize,
    /// The next token is a value (set after an operator).
    value: bool,
    /// First error met, reported for an Illegal token.
    error: Option<&'static str>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(input: &'a str) -> Self {
        Self {
            input,
            pos: 0,
            ppos: 0,
            value: false,
            error: None,
        }
    }

    pub(super) fn error(&self) -> &'static str {
        self.error.unwrap_or("illegal input")
    }

    /// End of the character last read (where parsing resumes).
    pub(super) fn offset(&self) -> usize {
        self.ppos
    }

    fn fail(&mut self, message: &'static str) {
        self.error.get_or_insert(message);
    }

    /// Reads one character; `None` at the end. A NUL is an error.
    fn next(&mut self) -> Option<char> {
        self.pos = self.ppos;
        let ch = self.input[self.ppos..].chars().next()?;
        self.ppos += ch.len_utf8();
        if ch == '\0' {
            self.fail("unexpected null");
        }
        Some(ch)
    }

    pub(super) fn peek(&mut self) -> Peek {
        let (pos, ppos, error) = (self.pos, self.ppos, self.error);
        let next = self.next();
        (self.pos, self.ppos, self.error) = (pos, ppos, error);
        match next {
            Some(ch) => Peek::Char(ch),
            None => Peek::Eof,
        }
    }

    /// The next token and its start offset.
    pub(super) fn scan(&mut self) -> (usize, Token<'a>) {
        loop {
            let Some(ch) = self.next() else {
                return (self.input.len(), Token::Eof);
            };
            let start = self.pos;
            if ch == '\0' {
                return (start, Token::Illegal);
            }
            if is_quote(ch) {
                return if self.scan_quoted(ch) {
                    (start, Token::Quoted(&self.input[start..self.ppos]))
                } else {
                    (start, Token::Illegal)
                };
            }
            if is_separator(ch) {
                self.value = false;
                return (start, Token::Separator(ch));
            }
            if is_operator(ch) {
                self.take_while(is_operator);
                self.value = true;
                return (start, Token::Operator(&self.input[start..self.ppos]));
            }
            if ch.is_whitespace() {
                continue;
            }
            if self.value {
                self.take_while(is_value);
                self.value = false;
                return (start, Token::Value(&self.input[start..self.ppos]));
            }
            if is_field(ch) {
                self.take_while(is_field);
                return (start, Token::Field(&self.input[start..self.ppos]));
            }
            return (start, Token::Other(ch));
        }
    }

    fn take_while(&mut self, accept: fn(char) -> bool) {
        while let Peek::Char(ch) = self.peek() {
            if !accept(ch) {
                break;
            }
            self.next();
        }
    }

    /// Reads past a quoted string opened by `quote`; false if malformed.
    fn scan_quoted(&mut self, quote: char) -> bool {
        let mut legal = true;
        let mut ch = self.next();
        while ch != Some(quote) {
            match ch {
                None | Some('\n' | '\0') => {
                    self.fail("quoted literal not terminated");
                    return false;
                }
                Some('\\') => {
                    let (after, ok) = self.scan_escape(quote);
                    legal &= ok;
                    ch = after;
                }
                Some(_) => ch = self.next(),
            }
        }
        legal
    }

    /// Reads an escape after `\`; returns the character after it.
    fn scan_escape(&mut self, quote: char) -> (Option<char>, bool) {
        match self.next() {
            Some('a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\') => (self.next(), true),
            Some(c) if c == quote => (self.next(), true),
            Some(c @ '0'..='7') => self.scan_digits(Some(c), 8, 3),
            Some('x') => {
                let first = self.next();
                self.scan_digits(first, 16, 2)
            }
            Some('u') => {
                let first = self.next();
                self.scan_digits(first, 16, 4)
            }
            Some('U') => {
                let first = self.next();
                self.scan_digits(first, 16, 8)
            }
            other => {
                self.fail("illegal escape sequence");
                (other, false)
            }
        }
    }

    fn scan_digits(&mut self, mut ch: Option<char>, base: u32, mut count: u32) -> (Option<char>, bool) {
        while count > 0 && ch.and_then(|c| c.to_digit(16)).is_some_and(|d| d < base) {
            ch = self.next();
            count -= 1;
        }
        if count > 0 {
            self.fail("illegal numeric escape sequence");
            return (ch, false);
        }
        (ch, true)
    }
}

fn is_field(ch: char) -> bool {
    ch == '_' || ch.is_ascii_alphanumeric()
}

fn is_operator(ch: char) -> bool {
    matches!(ch, '=' | '!' | '~')
}

fn is_quote(ch: char) -> bool {
    matches!(ch, '/' | '|' | '"')
}

fn is_separator(ch: char) -> bool {
    matches!(ch, ',' | '.')
}

fn is_value(ch: char) -> bool {
    ch != ',' && !ch.is_whitespace() && !ch.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &str) -> Vec<Token<'_>> {
        let mut scanner = Scanner::new(input);
        let mut out = Vec::new();
        loop {
            let (_, token) = scanner.scan();
            let done = matches!(token, Token::Eof | Token::Illegal);
            out.push(token);
            if done {
                return out;
            }
        }
    }

    #[test]
    fn fields_separators_operators_values() {
        assert_eq!(
            tokens("labels.foo==bar.baz,id!=x"),
            [
                Token::Field("labels"),
                Token::Separator('.'),
                Token::Field("foo"),
                Token::Operator("=="),
                Token::Value("bar.baz"),
                Token::Separator(','),
                Token::Field("id"),
                Token::Operator("!="),
                Token::Value("x"),
                Token::Eof
            ]
        );
    }

    #[test]
    fn whitespace_between_tokens_is_skipped() {
        assert_eq!(
            tokens(" name  ==   x"),
            [
                Token::Field("name"),
                Token::Operator("=="),
                Token::Value("x"),
                Token::Eof
            ]
        );
    }

    #[test]
    fn quotes_open_anywhere_a_token_starts() {
        assert_eq!(
            tokens(r#"topic=="/a/b""#),
            [
                Token::Field("topic"),
                Token::Operator("=="),
                Token::Quoted(r#""/a/b""#),
                Token::Eof
            ]
        );
        assert_eq!(
            tokens("topic==/a/b"),
            // A quoted value leaves the scanner expecting a value, as containerd's does.
            [
                Token::Field("topic"),
                Token::Operator("=="),
                Token::Quoted("/a/"),
                Token::Value("b"),
                Token::Eof
            ]
        );
        assert_eq!(tokens("|x|"), [Token::Quoted("|x|"), Token::Eof]);
    }

    #[test]
    fn escapes_in_quotes() {
        assert_eq!(
            tokens(r#""a\"b\n\x41\101\u00e9""#),
            [Token::Quoted(r#""a\"b\n\x41\101\u00e9""#), Token::Eof]
        );
        let mut bad = Scanner::new(r#""\q""#);
        assert_eq!(bad.scan().1, Token::Illegal);
        assert_eq!(bad.error(), "illegal escape sequence");
        let mut bad = Scanner::new(r#""\x4""#);
        assert_eq!(bad.scan().1, Token::Illegal);
        assert_eq!(bad.error(), "illegal numeric escape sequence");
        let mut open = Scanner::new("\"abc");
        assert_eq!(open.scan().1, Token::Illegal);
        assert_eq!(open.error(), "quoted literal not terminated");
    }

    #[test]
    fn nul_is_illegal() {
        let mut scanner = Scanner::new("a\0");
        assert_eq!(scanner.scan().1, Token::Field("a"));
        assert_eq!(scanner.scan().1, Token::Illegal);
        assert_eq!(scanner.error(), "unexpected null");
    }

    #[test]
    fn other_characters_are_reported() {
        assert_eq!(tokens("-x")[0], Token::Other('-'));
        assert_eq!(tokens("name=~x")[1], Token::Operator("=~"));
    }
}
