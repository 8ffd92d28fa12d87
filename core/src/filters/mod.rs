//! The filter language list and subscribe calls take.
//!
//! A request carries zero or more filter strings; an object matches when it
//! matches any of them (OR), and it matches a string when it matches every
//! comma-separated selector in it (AND). A selector is a dotted field path
//! with `==`, `!=`, `~=` (regular expression) or nothing (presence):
//! `labels."io.k8s/app"==web,name~=/^docker\.io\//`. Each kind of object says
//! which paths exist by implementing [`Adaptor`].
//!
//! Parsing follows containerd's grammar exactly, so a filter is accepted or
//! refused the same way by both daemons; the one difference is that a
//! malformed regular expression is an InvalidArgument error here, where
//! containerd silently matches nothing.

mod parser;
mod scanner;
mod unquote;

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::{Error, Result};

/// How an object exposes its fields to filters.
pub trait Adaptor {
    /// The value at `path`, or `None` when the object has no such field
    /// (which is different from an empty value for presence tests).
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>>;
}

/// Looks `rest` (the path after `labels.`) up in a label map. The remaining
/// components are joined with `.`, so `labels.a.b` names the key `a.b`.
pub fn label_field<'a>(labels: &'a HashMap<String, String>, rest: &[String]) -> Option<Cow<'a, str>> {
    if rest.is_empty() {
        return None;
    }
    labels.get(&rest.join(".")).map(|v| Cow::Borrowed(v.as_str()))
}

/// A field whose value counts as present only when it is not empty (how
/// containerd's adaptors treat plain string fields).
pub fn string_field(value: &str) -> Option<Cow<'_, str>> {
    (!value.is_empty()).then_some(Cow::Borrowed(value))
}

/// One `path op value` test.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selector {
    path: Vec<String>,
    operator: Operator,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operator {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(parser::RegexMatch),
}

impl Selector {
    fn matches(&self, object: &dyn Adaptor) -> bool {
        let value = object.field(&self.path);
        match &self.operator {
            Operator::Present => value.is_some(),
            Operator::Equal(want) => value.is_some_and(|v| v == want.as_str()),
            // An absent field reads as "", as in containerd.
            Operator::NotEqual(want) => value.as_deref().unwrap_or("") != want,
            Operator::Matches(re) => re.0.is_match(value.as_deref().unwrap_or("")),
        }
    }
}

/// A parsed set of filter strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// OR of ANDs; no alternatives at all means "match everything".
    alternatives: Vec<Vec<Selector>>,
}

impl Filter {
    /// A filter that matches everything.
    pub fn always() -> Self {
        Self::default()
    }

    /// Parses a request's filter strings. An empty list, or an empty string,
    /// matches everything. A malformed string is InvalidArgument, and the
    /// message quotes it and marks where parsing stopped.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut alternatives = Vec::with_capacity(filters.len());
        for filter in filters {
            let filter = filter.as_ref();
            if filter.is_empty() {
                // Matches everything, so the whole OR does.
                return Ok(Self::always());
            }
            let selectors = parser::parse(filter).map_err(|e| {
                Error::invalid_argument(format!(
                    "filter {filter:?}: parse error: {}: {}",
                    mark(filter, e.offset),
                    e.message
                ))
            })?;
            alternatives.push(selectors);
        }
        Ok(Self { alternatives })
    }

    /// Whether `object` passes the filter.
    pub fn matches(&self, object: &dyn Adaptor) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|all| all.iter().all(|selector| selector.matches(object)))
    }

    /// Whether any selector looks at a path starting with `field`, so a
    /// caller can skip costly work (such as decoding an event body) that no
    /// selector needs.
    pub fn uses_field(&self, field: &str) -> bool {
        self.alternatives
            .iter()
            .flatten()
            .any(|selector| selector.path.first().is_some_and(|f| f == field))
    }
}

/// Shows where in `input` an error was found: `[before >|c|< after]`.
fn mark(input: &str, offset: usize) -> String {
    match input.get(offset..).and_then(|rest| rest.chars().next()) {
        Some(ch) => {
            let end = offset + ch.len_utf8();
            format!("[{} >|{}|< {}]", &input[..offset], ch, &input[end..])
        }
        None => format!("[{input}]"),
    }
}

#[cfg(test)]
mod tests;
