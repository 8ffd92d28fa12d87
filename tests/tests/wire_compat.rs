//! berth's protos against containerd 1.6's (Debian's
//! golang-github-containerd-containerd-dev) and, for the 1.7+/2.x Transfer
//! and Streaming services, those the `containerd-client` crate vendors,
//! compiled with protox.

use berth_tests::wire_compat::{compile, differences, reference_files, transfer_reference_files};
use prost::Message;
use prost_reflect::DescriptorPool;

fn berth_pool() -> DescriptorPool {
    DescriptorPool::decode(berth_api::FILE_DESCRIPTOR_SET).expect("berth descriptor set")
}

/// Compiles the reference `(files, includes)`, checks it really holds the
/// `services` and `messages` compared against, and that berth has every
/// one of its services, methods, fields and enum values identically.
fn berth_matches(
    reference: (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>),
    services: &[&str],
    messages: &[&str],
    of: &str,
) {
    let reference = compile(&reference.0, &reference.1);
    for service in services {
        assert!(
            reference.get_service_by_name(service).is_some(),
            "{service} in the reference"
        );
    }
    for message in messages {
        assert!(
            reference.get_message_by_name(message).is_some(),
            "{message} in the reference"
        );
    }
    let problems = differences(&reference, &berth_pool());
    assert!(problems.is_empty(), "berth differs from {of}:\n{}", problems.join("\n"));
}

#[test]
fn every_containerd_service_method_and_field_exists_identically_in_berth() {
    berth_matches(
        reference_files(),
        &[
            "containerd.services.containers.v1.Containers",
            "containerd.services.content.v1.Content",
            "containerd.services.diff.v1.Diff",
            "containerd.services.events.v1.Events",
            "containerd.services.images.v1.Images",
            "containerd.services.introspection.v1.Introspection",
            "containerd.services.leases.v1.Leases",
            "containerd.services.namespaces.v1.Namespaces",
            "containerd.services.snapshots.v1.Snapshots",
            "containerd.services.tasks.v1.Tasks",
            "containerd.services.version.v1.Version",
            "containerd.services.events.ttrpc.v1.Events",
            "containerd.task.v2.Task",
            "grpc.health.v1.Health",
        ],
        &[
            "containerd.events.TaskExit",
            "containerd.services.images.v1.ImageCreate",
            "io.containerd.cgroups.v1.Metrics",
            "io.containerd.cgroups.v2.Metrics",
            "containerd.runc.v1.Options",
            "google.rpc.Status",
        ],
        "containerd 1.6",
    );
}

#[test]
fn containerds_transfer_and_streaming_protos_exist_identically_in_berth() {
    berth_matches(
        transfer_reference_files(),
        &[
            "containerd.services.transfer.v1.Transfer",
            "containerd.services.streaming.v1.Streaming",
        ],
        &[
            "containerd.types.transfer.OCIRegistry",
            "containerd.types.transfer.ImageStore",
            "containerd.types.transfer.ImageImportStream",
            "containerd.types.transfer.ImageExportStream",
            "containerd.types.transfer.Progress",
            "containerd.types.transfer.AuthResponse",
            "containerd.types.transfer.WindowUpdate",
        ],
        "containerd-client's vendored protos",
    );
}

#[test]
fn the_comparison_catches_changed_numbers_types_and_methods() {
    let (files, includes) = reference_files();
    let reference = compile(&files, &includes);
    let mut set = prost_types::FileDescriptorSet {
        file: reference.file_descriptor_protos().cloned().collect(),
    };
    for file in &mut set.file {
        for message in &mut file.message_type {
            if message.name() == "Namespace" {
                for field in &mut message.field {
                    if field.name() == "name" {
                        field.number = Some(9);
                    }
                }
            }
            if message.name() == "TaskExit" {
                for field in &mut message.field {
                    if field.name() == "pid" {
                        field.r#type = Some(prost_types::field_descriptor_proto::Type::Uint64 as i32);
                    }
                }
            }
        }
        for service in &mut file.service {
            if service.name() == "Version" {
                service.method[0].server_streaming = Some(true);
            }
        }
    }
    let altered = DescriptorPool::decode(set.encode_to_vec().as_slice()).expect("altered pool");
    let problems = differences(&reference, &altered);
    let text = problems.join("\n");
    assert!(
        text.contains("containerd.services.namespaces.v1.Namespace.name (field 1) is missing"),
        "{text}"
    );
    assert!(text.contains("containerd.events.TaskExit.pid"), "{text}");
    assert!(
        text.contains("containerd.services.version.v1.Version/Version"),
        "{text}"
    );
    assert!(differences(&reference, &reference).is_empty());
}
