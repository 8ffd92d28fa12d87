//! Parses one filter string into selectors that must all match.
//!
//! Grammar (containerd's):
//! ```text
//! selectors := selector ("," selector)*
//! selector  := fieldpath (operator value)?
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z0-9_]+
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,]+
//! ```
//! Only `~=` takes the `/…/` and `|…|` quotes; field names take `"…"` only.

use regex::Regex;

use super::scanner::{Peek, Scanner, Token};
use super::unquote::unquote;
use super::{Operator, Selector};

/// A parse failure: the offset it was found at and what was wrong.
#[derive(Debug)]
pub(super) struct ParseError {
    pub(super) offset: usize,
    pub(super) message: String,
}

/// The largest compiled regular expression a filter may hold, so a hostile
/// filter cannot make the daemon build a huge automaton.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn parse(input: &str) -> Result<Vec<Selector>, ParseError> {
    Parser {
        scanner: Scanner::new(input),
    }
    .selectors()
}

struct Parser<'a> {
    scanner: Scanner<'a>,
}

fn fail<T>(offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        offset,
        message: message.into(),
    })
}

impl<'a> Parser<'a> {
    fn selectors(&mut self) -> Result<Vec<Selector>, ParseError> {
        let mut selectors = vec![self.selector()?];
        loop {
            match self.scanner.peek() {
                Peek::Eof => return Ok(selectors),
                Peek::Char(',') => {
                    self.scanner.scan();
                    selectors.push(self.selector()?);
                }
                Peek::Char(other) => {
                    return fail(self.scanner.offset(), format!("unexpected input: {other}"));
                }
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let path = self.fieldpath()?;
        if matches!(self.scanner.peek(), Peek::Eof | Peek::Char(',')) {
            return Ok(Selector {
                path,
                operator: Operator::Present,
            });
        }
        let (offset, operator) = self.scanner.scan();
        let operator = match operator {
            Token::Operator("==") => Operator::Equal(self.value(false)?),
            Token::Operator("!=") => Operator::NotEqual(self.value(false)?),
            Token::Operator("~=") => {
                let value_offset = self.scanner.offset();
                let pattern = self.value(true)?;
                let regex = regex::RegexBuilder::new(&pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .or_else(|e| fail(value_offset, format!("invalid regular expression {pattern:?}: {e}")))?;
                Operator::Matches(RegexMatch(regex))
            }
            Token::Operator(other) => {
                return fail(offset, format!("unsupported operator {other:?}"));
            }
            Token::Illegal => return fail(offset, self.scanner.error()),
            _ => return fail(offset, r#"expected an operator ("=="|"!="|"~=")"#),
        };
        Ok(Selector { path, operator })
    }

    fn fieldpath(&mut self) -> Result<Vec<String>, ParseError> {
        let mut path = vec![self.field()?];
        while self.scanner.peek() == Peek::Char('.') {
            self.scanner.scan();
            path.push(self.field()?);
        }
        Ok(path)
    }

    fn field(&mut self) -> Result<String, ParseError> {
        match self.scanner.scan() {
            (_, Token::Field(name)) => Ok(name.to_string()),
            (offset, Token::Quoted(quoted)) => self.unquote(offset, quoted, false),
            (offset, Token::Illegal) => fail(offset, self.scanner.error()),
            (offset, _) => fail(offset, "expected field or quoted"),
        }
    }

    fn value(&mut self, alternative_quotes: bool) -> Result<String, ParseError> {
        match self.scanner.scan() {
            (_, Token::Value(value) | Token::Field(value)) => Ok(value.to_string()),
            (offset, Token::Quoted(quoted)) => self.unquote(offset, quoted, alternative_quotes),
            (offset, Token::Illegal) => fail(offset, self.scanner.error()),
            (offset, _) => fail(offset, "expected value or quoted"),
        }
    }

    fn unquote(&self, offset: usize, quoted: &'a str, alternative_quotes: bool) -> Result<String, ParseError> {
        if !alternative_quotes && !quoted.starts_with('"') {
            return fail(offset, "invalid quote encountered");
        }
        unquote(quoted).or_else(|e| fail(offset, format!("unquoting failed: {}", e.0)))
    }
}

/// A compiled `~=` pattern; compares by its source text.
#[derive(Clone, Debug)]
pub(crate) struct RegexMatch(pub(crate) Regex);

impl PartialEq for RegexMatch {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for RegexMatch {}
