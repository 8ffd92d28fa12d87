//! The ttrpc events endpoint shims call (`<socket>.ttrpc`): berth's ttrpc
//! client against berthd, and against stock containerd as a real peer.

use std::path::Path;
use std::time::Duration;

use berth_api::any::pack;
use berth_api::containerd::events::TaskExit;
use berth_api::containerd::services::events::ttrpc::v1::events_ttrpc::EventsClient;
use berth_api::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use berth_api::ttrpc::{CallOptions, Client};
use berth_tests::containerd::Containerd;
use berth_tests::ctr::Ctr;
use berth_tests::daemon::Daemon;
use tonic::Code;

fn task_exit(namespace: &str, id: &str) -> ForwardRequest {
    ForwardRequest {
        envelope: Some(Envelope {
            timestamp: Some(berth_core::timestamps::now()),
            namespace: namespace.into(),
            topic: "/tasks/exit".into(),
            event: Some(pack(&TaskExit {
                container_id: id.into(),
                id: id.into(),
                pid: 4242,
                exit_status: 3,
                exited_at: Some(berth_core::timestamps::now()),
            })),
        }),
    }
}

/// Forwards events until `ctr events` shows one (its subscription may not be
/// in place yet when the first one is sent).
async fn forward_until_seen(ttrpc_socket: &Path, ctr: &Ctr, id: &str) -> String {
    let events = ctr.spawn(&["events"]);
    let client = EventsClient::new(Client::connect(ttrpc_socket).await.expect("connect ttrpc"));
    let options = CallOptions::with_metadata("containerd-namespace-ttrpc", "default").timeout(Duration::from_secs(5));
    for _ in 0..100 {
        client
            .forward(&options, &task_exit("default", id))
            .await
            .expect("forward");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(line) = events.stdout().lines().find(|l| l.contains(id)) {
            let stderr = events.stderr();
            assert!(!stderr.contains("WARN"), "decode warning: {stderr}");
            return line.to_string();
        }
    }
    panic!("the forwarded event never showed in ctr events: {}", events.stderr());
}

#[tokio::test]
async fn shims_can_forward_events_to_berthd_over_ttrpc() {
    let daemon = Daemon::start();
    let line = forward_until_seen(&daemon.dir().join("berth.sock.ttrpc"), &daemon.ctr(), "c-berth").await;
    assert!(line.contains(" default /tasks/exit "), "{line}");
    assert!(line.contains(r#""container_id":"c-berth""#), "{line}");
    assert!(line.contains(r#""exit_status":3"#), "{line}");
}

#[tokio::test]
async fn malformed_envelopes_are_refused_over_ttrpc() {
    let daemon = Daemon::start();
    let client = EventsClient::new(Client::connect(daemon.dir().join("berth.sock.ttrpc")).await.unwrap());
    let options = CallOptions::default();
    let mut no_time = task_exit("default", "x");
    no_time.envelope.as_mut().unwrap().timestamp = None;
    let status = client.forward(&options, &no_time).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("timestamp"), "{status:?}");
    let status = client.forward(&options, &task_exit("Bad NS", "x")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("\"Bad NS\""), "{status:?}");
    let status = client
        .forward(&options, &ForwardRequest { envelope: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// berth's ttrpc client speaks to containerd's own ttrpc server, the one
/// containerd's shims use: the framing is the real protocol, not a private one.
#[tokio::test]
async fn berths_ttrpc_client_forwards_events_to_stock_containerd() {
    let containerd = Containerd::start();
    let line = forward_until_seen(&containerd.ttrpc_socket, &containerd.ctr(), "c-interop").await;
    assert!(line.contains(" default /tasks/exit "), "{line}\n{}", containerd.log());
    assert!(line.contains(r#""container_id":"c-interop""#), "{line}");
}
