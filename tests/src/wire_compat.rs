//! Compares berth's protos with containerd's, as compiled descriptors.
//!
//! Every service, method and streaming kind, every message field (number,
//! name, type, cardinality) and every enum value containerd declares must
//! exist identically in berth's files. berth may add fields, messages and
//! services of its own.

use std::path::{Path, PathBuf};

use prost_reflect::{Cardinality, DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

/// Where Debian's `golang-github-containerd-containerd-dev` and friends put
/// their protos.
pub const GOCODE: &str = "/usr/share/gocode/src";

/// containerd's files berth mirrors, and the include roots they need.
pub fn reference_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let gocode = Path::new(GOCODE);
    let containerd = gocode.join("github.com/containerd/containerd");
    let health_root = gocode.join("google.golang.org/grpc/debian/missing-sources/grpc/grpc-proto/master");
    let googleapis = gocode.join("github.com/gogo/googleapis");
    let mut files = Vec::new();
    for dir in ["api/types", "api/types/task", "api/events"] {
        files.extend(protos_in(&containerd.join(dir)));
    }
    for service in [
        "containers",
        "content",
        "diff",
        "events",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
        "tasks",
        "version",
    ] {
        files.extend(protos_in(&containerd.join(format!("api/services/{service}/v1"))));
    }
    files.extend(protos_in(&containerd.join("api/services/ttrpc/events/v1")));
    files.push(containerd.join("runtime/v2/task/shim.proto"));
    files.push(containerd.join("runtime/v2/runc/options/oci.proto"));
    files.push(gocode.join("github.com/containerd/cgroups/stats/v1/metrics.proto"));
    files.push(gocode.join("github.com/containerd/cgroups/v2/stats/metrics.proto"));
    files.push(health_root.join("grpc/health/v1/health.proto"));
    files.push(googleapis.join("google/rpc/status.proto"));
    let includes = vec![
        gocode.to_path_buf(),
        gocode.join("github.com/gogo/protobuf"),
        googleapis,
        health_root,
    ];
    (files, includes)
}

/// The version of the `containerd-client` crate whose vendored protos are
/// the reference for containerd 1.7+/2.x services (Transfer, Streaming).
pub const CONTAINERD_CLIENT: &str = "containerd-client-0.9.0";

/// containerd's Transfer and Streaming protos as the `containerd-client`
/// crate vendors them (a dev-dependency of these tests, so cargo has its
/// source), and their include root.
pub fn transfer_reference_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    let vendor = std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("{}: {e}", registry.display()))
        .filter_map(|index| index.ok())
        .map(|index| index.path().join(CONTAINERD_CLIENT).join("vendor"))
        .find(|vendor| vendor.is_dir())
        .unwrap_or_else(|| panic!("{CONTAINERD_CLIENT} is not in {}", registry.display()));
    let api = vendor.join("github.com/containerd/containerd/api");
    let mut files = vec![
        api.join("services/transfer/v1/transfer.proto"),
        api.join("services/streaming/v1/streaming.proto"),
    ];
    files.extend(protos_in(&api.join("types/transfer")));
    (files, vec![vendor])
}

fn protos_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (install golang-github-containerd-containerd-dev)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    out.sort();
    out
}

/// Compiles files with protox, resolving each file by its path below the
/// first include root that contains it.
pub fn compile(files: &[PathBuf], includes: &[PathBuf]) -> DescriptorPool {
    let mut compiler = protox::Compiler::new(includes).expect("include roots");
    compiler.include_imports(true);
    for file in files {
        let relative = includes
            .iter()
            .filter_map(|root| file.strip_prefix(root).ok())
            .min_by_key(|rel| rel.components().count())
            .unwrap_or_else(|| panic!("{} is under no include root", file.display()));
        compiler
            .open_file(relative)
            .unwrap_or_else(|e| panic!("compiling {}: {e:?}", file.display()));
    }
    compiler.descriptor_pool()
}

/// Packages that describe options or codegen, not the wire.
fn is_wire_package(package: &str) -> bool {
    !(package.starts_with("google.protobuf") || package == "gogoproto" || package.starts_with("containerd.plugin"))
}

fn field_type(field: &FieldDescriptor) -> String {
    let kind = match field.kind() {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}"),
    };
    let cardinality = match field.cardinality() {
        Cardinality::Repeated if field.is_map() => "map",
        Cardinality::Repeated => "repeated",
        Cardinality::Optional | Cardinality::Required => "single",
    };
    format!("{cardinality} {kind}")
}

fn compare_message(reference: &MessageDescriptor, ours: &MessageDescriptor, problems: &mut Vec<String>) {
    for field in reference.fields() {
        let name = format!("{}.{}", reference.full_name(), field.name());
        match ours.get_field(field.number()) {
            None => problems.push(format!("{name} (field {}) is missing", field.number())),
            Some(mine) => {
                if mine.name() != field.name() {
                    problems.push(format!(
                        "{name}: field {} is named {:?} in berth",
                        field.number(),
                        mine.name()
                    ));
                }
                let (want, have) = (field_type(&field), field_type(&mine));
                // Map entry messages are synthesised per file; compare their shape instead.
                if field.is_map() && mine.is_map() {
                    if let (Kind::Message(a), Kind::Message(b)) = (field.kind(), mine.kind()) {
                        compare_message(&a, &b, problems);
                    }
                } else if want != have {
                    problems.push(format!("{name}: containerd has {want}, berth has {have}"));
                }
            }
        }
    }
}

/// Everything in `reference` that `ours` lacks or declares differently.
pub fn differences(reference: &DescriptorPool, ours: &DescriptorPool) -> Vec<String> {
    let mut problems = Vec::new();
    for service in reference.services() {
        if !is_wire_package(service.package_name()) {
            continue;
        }
        let Some(mine) = ours.get_service_by_name(service.full_name()) else {
            problems.push(format!("service {} is missing", service.full_name()));
            continue;
        };
        for method in service.methods() {
            let name = format!("{}/{}", service.full_name(), method.name());
            let Some(m) = mine.methods().find(|m| m.name() == method.name()) else {
                problems.push(format!("method {name} is missing"));
                continue;
            };
            let describe = |m: &prost_reflect::MethodDescriptor| {
                format!(
                    "({}{}) -> ({}{})",
                    if m.is_client_streaming() { "stream " } else { "" },
                    m.input().full_name(),
                    if m.is_server_streaming() { "stream " } else { "" },
                    m.output().full_name()
                )
            };
            if describe(&method) != describe(&m) {
                problems.push(format!(
                    "method {name}: containerd {} berth {}",
                    describe(&method),
                    describe(&m)
                ));
            }
        }
    }
    for message in reference.all_messages() {
        if !is_wire_package(message.package_name()) || message.is_map_entry() {
            continue;
        }
        match ours.get_message_by_name(message.full_name()) {
            None => problems.push(format!("message {} is missing", message.full_name())),
            Some(mine) => compare_message(&message, &mine, &mut problems),
        }
    }
    for enumeration in reference.all_enums() {
        if !is_wire_package(enumeration.package_name()) {
            continue;
        }
        let Some(mine) = ours.get_enum_by_name(enumeration.full_name()) else {
            problems.push(format!("enum {} is missing", enumeration.full_name()));
            continue;
        };
        for value in enumeration.values() {
            match mine.get_value(value.number()) {
                Some(v) if v.name() == value.name() => {}
                Some(v) => problems.push(format!(
                    "{}: value {} is {} in containerd, {} in berth",
                    enumeration.full_name(),
                    value.number(),
                    value.name(),
                    v.name()
                )),
                None => problems.push(format!("{}.{} is missing", enumeration.full_name(), value.name())),
            }
        }
    }
    problems
}
