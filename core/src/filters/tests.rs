//! Every operator, quoting form and error of the filter language.

use std::borrow::Cow;
use std::collections::HashMap;

use super::*;
use crate::error::ErrorKind;

struct Thing {
    name: &'static str,
    kind: &'static str,
    labels: HashMap<String, String>,
}

impl Adaptor for Thing {
    fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        match path.first()?.as_str() {
            "name" => string_field(self.name),
            "kind" => string_field(self.kind),
            "labels" => label_field(&self.labels, &path[1..]),
            _ => None,
        }
    }
}

fn thing(name: &'static str, kind: &'static str, labels: &[(&str, &str)]) -> Thing {
    Thing {
        name,
        kind,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn corpus() -> Vec<Thing> {
    vec![
        thing("web", "svc", &[("tier", "front"), ("app.kubernetes.io/name", "web")]),
        thing("db", "svc", &[("tier", "back")]),
        thing("cache", "", &[("tier", ""), ("with space", "yes")]),
        thing("docker.io/library/busybox:latest", "image", &[("quote\"d", "1")]),
        thing("job-1", "batch", &[]),
    ]
}

/// Names of the corpus entries that pass `filters`.
fn select(filters: &[&str]) -> Vec<&'static str> {
    let filter = Filter::parse_all(filters).unwrap_or_else(|e| panic!("{filters:?}: {e}"));
    corpus()
        .into_iter()
        .filter(|t| filter.matches(t))
        .map(|t| t.name)
        .collect()
}

fn parse_error(filter: &str) -> String {
    let err = Filter::parse_all(&[filter]).expect_err(filter);
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{filter}");
    err.to_string()
}

const ALL: [&str; 5] = ["web", "db", "cache", "docker.io/library/busybox:latest", "job-1"];

#[test]
fn no_filters_or_an_empty_one_match_everything() {
    assert_eq!(select(&[]), ALL);
    assert_eq!(select(&[""]), ALL);
    assert_eq!(select(&["name==web", ""]), ALL);
}

#[test]
fn equality() {
    assert_eq!(select(&["name==web"]), ["web"]);
    assert_eq!(select(&["kind==svc"]), ["web", "db"]);
    assert_eq!(select(&["name==nothing"]), Vec::<&str>::new());
    // Unquoted values may hold dots, slashes and colons.
    assert_eq!(
        select(&["name==docker.io/library/busybox:latest"]),
        ["docker.io/library/busybox:latest"]
    );
}

#[test]
fn equality_needs_the_field_present() {
    // "kind" is empty (absent) on cache: == "" does not match it...
    assert_eq!(select(&[r#"kind=="""#]), Vec::<&str>::new());
    // ...but a label present with an empty value does.
    assert_eq!(select(&[r#"labels.tier=="""#]), ["cache"]);
}

#[test]
fn inequality_treats_absent_as_empty() {
    assert_eq!(
        select(&["kind!=svc"]),
        ["cache", "docker.io/library/busybox:latest", "job-1"]
    );
    assert_eq!(
        select(&["labels.tier!=front"]),
        ["db", "cache", "docker.io/library/busybox:latest", "job-1"]
    );
    assert_eq!(
        select(&[r#"kind!="""#]),
        ["web", "db", "docker.io/library/busybox:latest", "job-1"]
    );
}

#[test]
fn presence() {
    assert_eq!(
        select(&["kind"]),
        ["web", "db", "docker.io/library/busybox:latest", "job-1"]
    );
    assert_eq!(select(&["labels.tier"]), ["web", "db", "cache"]);
    assert_eq!(select(&["labels"]), Vec::<&str>::new());
    assert_eq!(select(&["unknown"]), Vec::<&str>::new());
}

#[test]
fn regular_expressions() {
    assert_eq!(select(&["name~=^d"]), ["db", "docker.io/library/busybox:latest"]);
    assert_eq!(select(&["name~=/^job-[0-9]$/"]), ["job-1"]);
    assert_eq!(select(&["name~=|/library/|"]), ["docker.io/library/busybox:latest"]);
    assert_eq!(select(&["name~=^(web|db)$"]), ["web", "db"]);
    assert_eq!(
        select(&[r#"name~="b""#]),
        ["web", "db", "docker.io/library/busybox:latest", "job-1"]
    );
    // Matching is unanchored, and an absent field is matched as "".
    assert_eq!(select(&["kind~=^$"]), ["cache"]);
    // The alternative quotes let a pattern hold double quotes and slashes.
    assert_eq!(select(&[r"name~=/\/library\//"]), ["docker.io/library/busybox:latest"]);
}

#[test]
fn commas_and_and_repeated_filters_or() {
    assert_eq!(select(&["kind==svc,labels.tier==back"]), ["db"]);
    assert_eq!(select(&["kind==svc, labels.tier==back"]), ["db"]);
    assert_eq!(select(&["name==web", "name==db"]), ["web", "db"]);
    assert_eq!(select(&["kind==svc,name==web", "kind==batch"]), ["web", "job-1"]);
}

#[test]
fn quoted_field_names() {
    assert_eq!(select(&[r#"labels."app.kubernetes.io/name"==web"#]), ["web"]);
    assert_eq!(select(&[r#"labels."with space""#]), ["cache"]);
    assert_eq!(
        select(&[r#"labels."quote\"d"==1"#]),
        ["docker.io/library/busybox:latest"]
    );
    // Unquoted dots split the path and join back into the key...
    assert_eq!(select(&["labels.app==web"]), Vec::<&str>::new());
    // ...but a `/` in a field name opens a quote, so such keys need quoting.
    assert!(parse_error("labels.app.kubernetes.io/name==web").contains("quoted literal not terminated"));
}

#[test]
fn whitespace_around_tokens() {
    assert_eq!(select(&["  name  ==  web"]), ["web"]);
    assert_eq!(select(&["name==web,\tkind==svc"]), ["web"]);
}

#[test]
fn escapes_in_values() {
    assert_eq!(select(&[r#"name=="w\x65b""#]), ["web"]);
    assert_eq!(select(&[r#"name=="\u0077eb""#]), ["web"]);
    assert_eq!(select(&[r#"name=="\167eb""#]), ["web"]);
}

#[test]
fn uses_field_reports_the_first_component() {
    let filter = Filter::parse_all(&["topic==\"/x\"", "event.id==1"]).unwrap();
    assert!(filter.uses_field("event"));
    assert!(filter.uses_field("topic"));
    assert!(!filter.uses_field("namespace"));
    assert!(!Filter::always().uses_field("event"));
}

#[test]
fn operator_errors() {
    assert!(parse_error("name===x").contains(r#"unsupported operator "===""#));
    assert!(parse_error("name=x").contains(r#"unsupported operator "=""#));
    assert!(parse_error("name=~x").contains("unsupported operator"));
    assert!(parse_error("name x").contains("expected an operator"));
    assert!(parse_error("name ").contains("expected an operator"));
    assert!(parse_error("name-x").contains("expected an operator"));
}

#[test]
fn value_errors() {
    assert!(parse_error("name==").contains("expected value or quoted"));
    assert!(parse_error("name==,kind").contains("expected value or quoted"));
    // Slash quotes are for regular expressions only.
    let err = parse_error("topic==/tasks/exit");
    assert!(err.contains("invalid quote encountered"), "{err}");
    assert!(parse_error("name!=|x|").contains("invalid quote encountered"));
    assert!(parse_error(r#"name=="abc"#).contains("quoted literal not terminated"));
    assert!(parse_error(r#"name=="\q""#).contains("illegal escape sequence"));
    assert!(parse_error(r#"name=="\x4g""#).contains("illegal numeric escape sequence"));
    assert!(parse_error(r#"name=="\xff""#).contains("unquoting failed"));
}

#[test]
fn field_errors() {
    assert!(parse_error(",name").contains("expected field or quoted"));
    assert!(parse_error("labels.").contains("expected field or quoted"));
    assert!(parse_error("labels..x").contains("expected field or quoted"));
    assert!(parse_error("==x").contains("expected field or quoted"));
    assert!(parse_error("/name/==x").contains("invalid quote encountered"));
    assert!(parse_error("name==x,").contains("expected field or quoted"));
}

#[test]
fn trailing_input_errors() {
    assert!(parse_error(r#"name=="x"y"#).contains("unexpected input: y"));
    assert!(parse_error("name==x ").contains("unexpected input"));
    assert!(parse_error("name==x ,kind").contains("unexpected input"));
}

#[test]
fn regex_errors_are_invalid_argument() {
    let err = parse_error("name~=/(unclosed/");
    assert!(err.contains("invalid regular expression \"(unclosed\""), "{err}");
    let err = parse_error("name~=/x{99999999}/");
    assert!(err.contains("invalid regular expression"), "{err}");
}

#[test]
fn nul_is_rejected() {
    assert!(parse_error("name\0").contains("unexpected null"));
    assert!(parse_error("name==\"a\0\"").contains("unexpected null"));
}

#[test]
fn messages_quote_the_filter_and_mark_the_spot() {
    let err = parse_error("topic==/x/");
    assert_eq!(
        err,
        r#"filter "topic==/x/": parse error: [topic== >|/|< x/]: invalid quote encountered: invalid argument"#
    );
    let err = parse_error("name==");
    assert_eq!(
        err,
        r#"filter "name==": parse error: [name==]: expected value or quoted: invalid argument"#
    );
}

#[test]
fn one_bad_filter_fails_the_whole_request() {
    let err = Filter::parse_all(&["name==web", "name=="]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains(r#"filter "name==""#));
}

#[test]
fn unicode_values_and_marks() {
    let filter = Filter::parse_all(&["name==wéb"]).unwrap();
    assert!(!filter.matches(&thing("web", "", &[])));
    assert!(filter.matches(&thing("wéb", "", &[])));
    let err = parse_error("né==x");
    assert!(err.contains("[n >|é|< ==x]"), "{err}");
}
