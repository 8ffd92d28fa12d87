//! The foundation as Debian's `ctr` sees it: version, namespaces, plugins
//! and events against a real berthd.

use std::time::Duration;

use berth_tests::daemon::Daemon;

const EVENT_WAIT: Duration = Duration::from_secs(20);

#[test]
fn version_prints_server_version_revision_and_a_stable_uuid() {
    let mut daemon = Daemon::start();
    let out = daemon.ctr().ok(&["version"]);
    let server = out.split("Server:").nth(1).expect("a Server section");
    assert!(
        server.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let revision = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("Revision:"))
        .expect("a revision line")
        .trim()
        .to_string();
    assert!(!revision.is_empty(), "{out}");
    let uuid = server
        .lines()
        .find_map(|l| l.trim().strip_prefix("UUID:"))
        .expect("a uuid line")
        .trim()
        .to_string();
    assert_eq!(uuid.len(), 36, "{out}");

    daemon.restart();
    let again = daemon.ctr().ok(&["version"]);
    assert!(
        again.contains(&format!("UUID: {uuid}")),
        "the uuid survives a restart:\n{again}"
    );
}

#[test]
fn namespaces_create_label_list_and_remove() {
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    ctr.ok(&["namespaces", "create", "n1", "a=b"]);
    ctr.ok(&["namespaces", "label", "n1", "c=d"]);
    let list = ctr.ok(&["namespaces", "ls"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("n1 "))
        .unwrap_or_else(|| panic!("n1 listed:\n{list}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["n1", "a=b,c=d"], "{list}");

    // Removing a label: an empty value deletes it.
    ctr.ok(&["namespaces", "label", "n1", "a="]);
    let list = ctr.ok(&["namespaces", "ls"]);
    assert!(list.lines().any(|l| l.split_whitespace().eq(["n1", "c=d"])), "{list}");

    // Creating it again is refused.
    let err = ctr.fails(&["namespaces", "create", "n1"]);
    assert!(err.contains("namespace \"n1\": already exists"), "{err}");

    let removed = ctr.ok(&["namespaces", "rm", "n1"]);
    assert_eq!(removed.trim(), "n1");
    let list = ctr.ok(&["namespaces", "ls"]);
    assert!(!list.lines().any(|l| l.starts_with("n1 ")), "{list}");

    // Delete of an unknown namespace answers NotFound, which ctr swallows
    // (printing the name and exiting 0), exactly as with containerd.
    let out = ctr.run(&["namespaces", "rm", "n1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "n1");
}

#[test]
fn invalid_namespace_names_are_invalid_argument() {
    let daemon = Daemon::start();
    let err = daemon.ctr().fails(&["namespaces", "create", "bad_name-"]);
    assert!(err.contains("\"bad_name-\""), "{err}");
    assert!(err.contains("invalid argument"), "{err}");
    let list = daemon.ctr().ok(&["namespaces", "ls"]);
    assert!(!list.contains("bad_name"), "nothing was created:\n{list}");
}

/// Rows of `ctr plugins ls` as (type, id, status).
fn plugin_rows(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "TYPE ID PLATFORMS STATUS: {l}");
            (cols[0].to_string(), cols[1].to_string(), cols[3].to_string())
        })
        .collect()
}

#[test]
fn plugins_ls_lists_every_plugin_ok_and_filters_by_type() {
    let daemon = Daemon::start();
    let all = plugin_rows(&daemon.ctr().ok(&["plugins", "ls"]));
    for expected in [
        ("io.containerd.event.v1", "exchange"),
        ("io.containerd.metadata.v1", "redb"),
        ("io.containerd.grpc.v1", "version"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.grpc.v1", "namespaces"),
        ("io.containerd.grpc.v1", "events"),
        ("io.containerd.grpc.v1", "healthcheck"),
    ] {
        assert!(
            all.iter().any(|(t, id, _)| t == expected.0 && id == expected.1),
            "{expected:?} missing from {all:?}"
        );
    }
    assert!(all.iter().all(|(_, _, status)| status == "ok"), "{all:?}");

    let grpc = plugin_rows(&daemon.ctr().ok(&["plugins", "ls", "type==io.containerd.grpc.v1"]));
    assert!(!grpc.is_empty());
    assert!(grpc.iter().all(|(t, _, _)| t == "io.containerd.grpc.v1"), "{grpc:?}");
    assert_eq!(
        grpc.len(),
        all.iter().filter(|(t, _, _)| t == "io.containerd.grpc.v1").count()
    );

    let one = plugin_rows(
        &daemon
            .ctr()
            .ok(&["plugins", "ls", "type==io.containerd.grpc.v1,id==events"]),
    );
    assert_eq!(one.len(), 1, "{one:?}");

    let err = daemon.ctr().fails(&["plugins", "ls", "type=="]);
    assert!(
        err.contains("invalid argument") && err.contains("filter \"type==\""),
        "{err}"
    );
}

#[test]
fn events_show_namespace_changes_with_json_bodies_and_filter_by_topic() {
    let daemon = Daemon::start();
    let ctr = daemon.ctr();
    let all = ctr.subscribe(&[]);
    let creates = ctr.subscribe(&[r#"topic=="/namespaces/create""#]);

    ctr.ok(&["namespaces", "create", "n1", "a=b"]);
    ctr.ok(&["namespaces", "label", "n1", "c=d"]);
    ctr.ok(&["namespaces", "rm", "n1"]);

    let delete = all.wait_for_line(&["/namespaces/delete", r#""name":"n1""#], EVENT_WAIT);
    let create = all.wait_for_line(&["/namespaces/create", r#""name":"n1""#], EVENT_WAIT);
    let update = all.wait_for_line(&["/namespaces/update", r#""name":"n1""#], EVENT_WAIT);

    // "<date> <time> +0000 UTC <namespace> <topic> <json>", as ctr prints envelopes.
    for (line, namespace, topic) in [
        (&create, "default", "/namespaces/create"),
        (&update, "default", "/namespaces/update"),
        (&delete, "n1", "/namespaces/delete"),
    ] {
        let fields: Vec<&str> = line.splitn(7, ' ').collect();
        assert_eq!(fields.len(), 7, "{line}");
        assert_eq!(&fields[2..4], ["+0000", "UTC"], "{line}");
        assert_eq!(fields[4], namespace, "{line}");
        assert_eq!(fields[5], topic, "{line}");
        assert!(
            fields[6].starts_with('{') && fields[6].ends_with('}'),
            "JSON body: {line}"
        );
    }
    assert!(create.contains(r#""labels":{"a":"b"}"#), "{create}");
    assert!(update.contains(r#""c":"d""#), "{update}");

    let out = all.stdout();
    let position = |needle: &str| out.find(needle).unwrap_or_else(|| panic!("{needle} in {out}"));
    assert!(
        position(&create) < position(&update) && position(&update) < position(&delete),
        "{out}"
    );

    creates.wait_for_line(&["/namespaces/create", r#""name":"n1""#], EVENT_WAIT);
    let filtered = creates.stdout();
    assert!(
        filtered.lines().all(|l| l.contains(" /namespaces/create ")),
        "only creates pass the filter:\n{filtered}"
    );
    for subscriber in [&all, &creates] {
        let stderr = subscriber.stderr();
        assert!(
            !stderr.contains("WARN") && !stderr.contains("cannot unmarshal"),
            "decode warnings: {stderr}"
        );
    }
}

#[test]
fn a_malformed_event_filter_is_refused_naming_it() {
    let daemon = Daemon::start();
    let err = daemon.ctr().fails(&["events", "topic==/namespaces/create"]);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("topic==/namespaces/create"), "{err}");
}
