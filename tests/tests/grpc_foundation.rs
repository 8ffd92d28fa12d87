//! The foundation over berth's own gRPC client: error codes and messages,
//! the namespace header, events, health.

use std::collections::HashMap;
use std::time::Duration;

use berth_api::any::pack;
use berth_api::client::{NAMESPACE_HEADER, namespaced};
use berth_api::containerd::events::NamespaceCreate;
use berth_api::containerd::services::events::v1::events_client::EventsClient;
use berth_api::containerd::services::events::v1::{PublishRequest, SubscribeRequest};
use berth_api::containerd::services::introspection::v1::PluginsRequest;
use berth_api::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use berth_api::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_api::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, GetNamespaceRequest, ListNamespacesRequest, Namespace,
    UpdateNamespaceRequest,
};
use berth_api::containerd::services::version::v1::version_client::VersionClient;
use berth_api::grpc::health::v1::HealthCheckRequest;
use berth_api::grpc::health::v1::health_check_response::ServingStatus;
use berth_api::grpc::health::v1::health_client::HealthClient;
use berth_tests::daemon::Daemon;
use futures_util::StreamExt;
use tonic::{Code, Request};

fn namespace(name: &str, labels: &[(&str, &str)]) -> Option<Namespace> {
    Some(Namespace {
        name: name.to_string(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    })
}

async fn namespace_names(client: &mut NamespacesClient<tonic::transport::Channel>) -> Vec<String> {
    client
        .list(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .namespaces
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[tokio::test]
async fn invalid_namespace_names_are_invalid_argument_and_change_nothing() {
    let daemon = Daemon::start();
    let mut client = NamespacesClient::new(daemon.channel().await);
    for bad in ["Bad Name", "-lead", "trail-", "a..b", &"x".repeat(77), ""] {
        let status = client
            .create(CreateNamespaceRequest {
                namespace: namespace(bad, &[]),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        if !bad.is_empty() {
            assert!(status.message().contains(&format!("{bad:?}")), "{status:?}");
        }
    }
    let status = client
        .create(CreateNamespaceRequest {
            namespace: namespace("n1", &[("k", &"v".repeat(5000))]),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("namespace \"n1\": label \"k\""), "{status:?}");
    assert!(namespace_names(&mut client).await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn malformed_filters_are_invalid_argument_naming_the_filter() {
    let daemon = Daemon::start();
    let mut introspection = IntrospectionClient::new(daemon.channel().await);
    for bad in ["type==", "id===x", "type==/x/", "type~=/(/", "type==x,"] {
        let status = introspection
            .plugins(PluginsRequest {
                filters: vec!["id==events".into(), bad.into()],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(status.message().contains(&format!("filter {bad:?}")), "{status:?}");
    }
    let mut events = EventsClient::new(daemon.channel().await);
    let status = events
        .subscribe(SubscribeRequest {
            filters: vec!["topic==/namespaces/create".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("topic==/namespaces/create"), "{status:?}");
}

#[tokio::test]
async fn namespace_updates_follow_field_masks() {
    let daemon = Daemon::start();
    let mut client = NamespacesClient::new(daemon.channel().await);
    client
        .create(CreateNamespaceRequest {
            namespace: namespace("n1", &[("a", "b"), ("x", "y")]),
        })
        .await
        .unwrap();
    let updated = client
        .update(UpdateNamespaceRequest {
            namespace: namespace("n1", &[("c", "d")]),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.c".into(), "labels.x".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    let want: HashMap<String, String> = [("a", "b"), ("c", "d")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(updated.labels, want);

    let status = client
        .update(UpdateNamespaceRequest {
            namespace: namespace("n1", &[]),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"name\""), "{status:?}");

    let status = client
        .update(UpdateNamespaceRequest {
            namespace: namespace("ghost", &[("a", "b")]),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        namespace_names(&mut client).await,
        ["n1"],
        "no namespace was made by the failed update"
    );
}

#[tokio::test]
async fn get_of_an_unknown_namespace_is_empty_and_delete_is_not_found() {
    let daemon = Daemon::start();
    let mut client = NamespacesClient::new(daemon.channel().await);
    let got = client
        .get(GetNamespaceRequest { name: "nobody".into() })
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(got.name, "nobody");
    assert!(got.labels.is_empty());
    let status = client
        .delete(DeleteNamespaceRequest { name: "nobody".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "namespace \"nobody\": not found");
}

#[tokio::test]
async fn publish_needs_a_valid_namespace_header() {
    let daemon = Daemon::start();
    let mut events = EventsClient::new(daemon.channel().await);
    let publish = PublishRequest {
        topic: "/test/event".into(),
        event: Some(pack(&NamespaceCreate::default())),
    };
    let status = events.publish(Request::new(publish.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "namespace is required: failed precondition");

    let status = events
        .publish(namespaced("Not Valid", publish.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"Not Valid\""), "{status:?}");

    let status = events
        .publish(namespaced(
            "default",
            PublishRequest {
                topic: "no-slash".into(),
                ..publish.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"no-slash\""), "{status:?}");

    events.publish(namespaced("default", publish)).await.unwrap();
}

#[tokio::test]
async fn published_events_reach_subscribers_with_bare_type_names() {
    let daemon = Daemon::start();
    let mut events = EventsClient::new(daemon.channel().await);
    let mut stream = events
        .subscribe(SubscribeRequest {
            filters: vec!["namespace==n2".into(), "event.name==wanted".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut any = pack(&NamespaceCreate {
        name: "wanted".into(),
        labels: Default::default(),
    });
    any.type_url = format!("type.googleapis.com/{}", any.type_url);
    for (ns, name) in [("default", "skipped"), ("n2", "by-namespace"), ("default", "wanted")] {
        let mut event = any.clone();
        if name != "wanted" {
            event = pack(&NamespaceCreate {
                name: name.into(),
                labels: Default::default(),
            });
        }
        events
            .publish(namespaced(
                ns,
                PublishRequest {
                    topic: "/test/event".into(),
                    event: Some(event),
                },
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let envelope = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("no error");
        let event = envelope.event.unwrap();
        assert_eq!(event.type_url, "containerd.events.NamespaceCreate");
        let body: NamespaceCreate = berth_api::any::unpack(&event).unwrap();
        seen.push((envelope.namespace, body.name));
    }
    assert_eq!(
        seen,
        [
            ("n2".to_string(), "by-namespace".to_string()),
            ("default".to_string(), "wanted".to_string())
        ]
    );
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_its_services() {
    let daemon = Daemon::start();
    let mut health = HealthClient::new(daemon.channel().await);
    for service in [
        "",
        "containerd.services.namespaces.v1.Namespaces",
        "grpc.health.v1.Health",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn unregistered_services_are_unimplemented() {
    // Sandbox stores (a containerd 2.0 service) are not served.
    use tonic::codegen::http::uri::PathAndQuery;
    let daemon = Daemon::start();
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/containerd.services.sandbox.v1.Store/Create");
    let status = grpc
        .unary::<(), (), _>(namespaced("default", ()), path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// The shared interceptor on a real server: a namespaced service never sees
/// a request without a valid namespace.
#[tokio::test]
async fn the_required_namespace_interceptor_guards_a_real_server() {
    use berth_api::containerd::services::version::v1::VersionResponse;
    use berth_api::containerd::services::version::v1::version_server::{Version, VersionServer};
    use berth_services::namespace_header::{namespace_required, required};
    use tonic::service::interceptor::InterceptedService;

    /// Echoes the namespace the interceptor handed over.
    struct Echo;
    #[tonic::async_trait]
    impl Version for Echo {
        async fn version(&self, request: Request<()>) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
            let namespace = required(&request)?;
            Ok(tonic::Response::new(VersionResponse {
                version: namespace,
                revision: String::new(),
            }))
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InterceptedService::new(VersionServer::new(Echo), namespace_required))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let mut client = VersionClient::new(berth_api::client::connect_unix(&socket).await.unwrap());

    let status = client.version(Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "namespace is required: failed precondition");

    let mut empty = Request::new(());
    empty.metadata_mut().insert(NAMESPACE_HEADER, "".parse().unwrap());
    assert_eq!(
        client.version(empty).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let status = client.version(namespaced("bad ns", ())).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"bad ns\""), "{status:?}");

    let reply = client.version(namespaced("k8s.io", ())).await.unwrap().into_inner();
    assert_eq!(reply.version, "k8s.io");
    server.abort();
}
