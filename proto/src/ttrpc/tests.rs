//! Client and server against each other and against hand-written frames.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, oneshot};
use tonic::{Code, Status};

use super::frame::{self, Frame, KIND_REQUEST, KIND_RESPONSE};
use super::{CallOptions, Client, RequestContext, Server};
use crate::containerd::services::events::ttrpc::v1::events_ttrpc::{Events, EventsClient, EventsServer};
use crate::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use crate::containerd::task::v2::ConnectRequest;
use crate::containerd::task::v2::task_ttrpc::{Task, TaskClient, TaskServer};
use crate::ttrpc_wire::{KeyValue, Request, Response};

/// An envelope and the metadata it arrived with.
type Seen = (Envelope, Vec<(String, String)>);

/// Records forwarded envelopes; topics steer its behaviour in tests.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Events for Recorder {
    async fn forward(&self, context: RequestContext, request: ForwardRequest) -> Result<(), Status> {
        let envelope = request.envelope.unwrap_or_default();
        match envelope.topic.as_str() {
            "/slow" => tokio::time::sleep(Duration::from_millis(300)).await,
            "/missing" => return Err(Status::not_found("event \"x\": not found")),
            "/forever" => std::future::pending::<()>().await,
            _ => {}
        }
        self.seen.lock().await.push((envelope, context.metadata));
        Ok(())
    }
}

/// A task service that implements nothing.
struct NoTask;
impl Task for NoTask {}

struct Harness {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Harness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let recorder = Arc::new(Recorder::default());
        let server = Server::new()
            .register(EventsServer(Arc::clone(&recorder)))
            .register(TaskServer(Arc::new(NoTask)));
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(
            listener,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(2),
        ));
        Self {
            _dir: dir,
            path,
            recorder,
            stop: Some(stop),
            served,
        }
    }

    async fn client(&self) -> Client {
        Client::connect(&self.path).await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.await.unwrap().unwrap();
    }
}

fn envelope(topic: &str) -> ForwardRequest {
    ForwardRequest {
        envelope: Some(Envelope {
            timestamp: Some(prost_types::Timestamp { seconds: 1, nanos: 2 }),
            namespace: "default".into(),
            topic: topic.into(),
            event: None,
        }),
    }
}

#[tokio::test]
async fn typed_call_carries_payload_and_metadata() {
    let harness = Harness::start().await;
    let client = EventsClient::new(harness.client().await);
    let options = CallOptions::with_metadata("containerd-namespace-ttrpc", "n1");
    client.forward(&options, &envelope("/tasks/start")).await.unwrap();
    let seen = harness.recorder.seen.lock().await.clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.topic, "/tasks/start");
    assert_eq!(seen[0].0.timestamp.unwrap().nanos, 2);
    assert_eq!(
        seen[0].1,
        vec![("containerd-namespace-ttrpc".to_string(), "n1".to_string())]
    );
    harness.stop().await;
}

#[tokio::test]
async fn errors_keep_their_code_and_message() {
    let harness = Harness::start().await;
    let client = EventsClient::new(harness.client().await);
    let err = client
        .forward(&CallOptions::default(), &envelope("/missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "event \"x\": not found");
    harness.stop().await;
}

#[tokio::test]
async fn unknown_service_method_and_unimplemented_stub_answer_unimplemented() {
    let harness = Harness::start().await;
    let client = harness.client().await;
    let err = client
        .call_raw("example.Nothing", "Call", &CallOptions::default(), vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("example.Nothing"));
    let err = client
        .call_raw(
            "containerd.services.events.ttrpc.v1.Events",
            "Nope",
            &CallOptions::default(),
            vec![],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let task = TaskClient::new(client);
    let err = task
        .connect(&CallOptions::default(), &ConnectRequest { id: "c".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("containerd.task.v2.Task/Connect"));
    harness.stop().await;
}

#[tokio::test]
async fn calls_on_one_connection_do_not_wait_for_each_other() {
    let harness = Harness::start().await;
    let client = EventsClient::new(harness.client().await);
    let slow_client = client.clone();
    let slow = tokio::spawn(async move { slow_client.forward(&CallOptions::default(), &envelope("/slow")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    client
        .forward(&CallOptions::default(), &envelope("/fast"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "fast call waited for the slow one"
    );
    slow.await.unwrap().unwrap();
    let topics: Vec<String> = harness
        .recorder
        .seen
        .lock()
        .await
        .iter()
        .map(|(e, _)| e.topic.clone())
        .collect();
    assert_eq!(topics, ["/fast", "/slow"]);
    harness.stop().await;
}

#[tokio::test]
async fn client_timeout_gives_deadline_exceeded_and_the_server_enforces_it_too() {
    let harness = Harness::start().await;
    let client = EventsClient::new(harness.client().await);
    let options = CallOptions::default().timeout(Duration::from_millis(100));
    let err = client.forward(&options, &envelope("/forever")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);

    // The server reads timeout_nano and answers DeadlineExceeded itself.
    let mut raw = UnixStream::connect(&harness.path).await.unwrap();
    let request = Request {
        service: "containerd.services.events.ttrpc.v1.Events".into(),
        method: "Forward".into(),
        payload: envelope("/forever").encode_to_vec(),
        timeout_nano: 50_000_000,
        metadata: vec![],
    };
    frame::write_frame(&mut raw, 1, KIND_REQUEST, 0, &request.encode_to_vec())
        .await
        .unwrap();
    let response = read_response(&mut raw, 1).await;
    assert_eq!(response.status.unwrap().code, Code::DeadlineExceeded as i32);
    harness.stop().await;
}

async fn read_response(raw: &mut UnixStream, want_stream: u32) -> Response {
    match tokio::time::timeout(Duration::from_secs(5), frame::read_frame(raw))
        .await
        .expect("response in time")
        .unwrap()
        .unwrap()
    {
        Frame::Complete(header, data) => {
            assert_eq!(header.kind, KIND_RESPONSE);
            assert_eq!(header.stream_id, want_stream);
            Response::decode(data.as_slice()).unwrap()
        }
        Frame::Oversized(h) => panic!("oversized response {h:?}"),
    }
}

#[tokio::test]
async fn server_rejects_even_stream_ids_and_malformed_requests_on_that_stream() {
    let harness = Harness::start().await;
    let mut raw = UnixStream::connect(&harness.path).await.unwrap();
    let request = Request {
        service: "containerd.services.events.ttrpc.v1.Events".into(),
        method: "Forward".into(),
        payload: envelope("/x").encode_to_vec(),
        timeout_nano: 0,
        metadata: vec![KeyValue {
            key: "k".into(),
            value: "v".into(),
        }],
    };
    frame::write_frame(&mut raw, 2, KIND_REQUEST, 0, &request.encode_to_vec())
        .await
        .unwrap();
    let response = read_response(&mut raw, 2).await;
    let status = response.status.unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("odd"));

    frame::write_frame(&mut raw, 3, KIND_REQUEST, 0, &[0xff, 0xff, 0xff])
        .await
        .unwrap();
    let response = read_response(&mut raw, 3).await;
    assert_eq!(response.status.unwrap().code, Code::InvalidArgument as i32);

    // A malformed payload for a known method is also the caller's error.
    let bad_payload = Request {
        payload: vec![0x0a, 0xff],
        ..request.clone()
    };
    frame::write_frame(&mut raw, 5, KIND_REQUEST, 0, &bad_payload.encode_to_vec())
        .await
        .unwrap();
    let response = read_response(&mut raw, 5).await;
    assert_eq!(response.status.unwrap().code, Code::InvalidArgument as i32);

    // The connection still serves well-formed requests afterwards.
    frame::write_frame(&mut raw, 7, KIND_REQUEST, 0, &request.encode_to_vec())
        .await
        .unwrap();
    let response = read_response(&mut raw, 7).await;
    assert_eq!(response.status.unwrap().code, Code::Ok as i32);
    harness.stop().await;
}

#[tokio::test]
async fn oversized_requests_get_resource_exhausted_and_the_connection_survives() {
    let harness = Harness::start().await;
    let mut raw = UnixStream::connect(&harness.path).await.unwrap();
    let length = frame::MAX_DATA_LEN + 1;
    let header = frame::FrameHeader {
        length,
        stream_id: 1,
        kind: KIND_REQUEST,
        flags: 0,
    };
    tokio::io::AsyncWriteExt::write_all(&mut raw, &header.encode())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, &vec![0u8; length as usize])
        .await
        .unwrap();
    let response = read_response(&mut raw, 1).await;
    assert_eq!(response.status.unwrap().code, Code::ResourceExhausted as i32);

    let request = Request {
        service: "containerd.services.events.ttrpc.v1.Events".into(),
        method: "Forward".into(),
        payload: envelope("/after").encode_to_vec(),
        timeout_nano: 0,
        metadata: vec![],
    };
    frame::write_frame(&mut raw, 3, KIND_REQUEST, 0, &request.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(read_response(&mut raw, 3).await.status.unwrap().code, 0);
    harness.stop().await;
}

/// A fake server that records raw request frames and answers OK.
async fn recording_server(listener: UnixListener, frames: Arc<Mutex<Vec<(frame::FrameHeader, Request)>>>) {
    let (mut stream, _) = listener.accept().await.unwrap();
    while let Ok(Some(Frame::Complete(header, data))) = frame::read_frame(&mut stream).await {
        frames
            .lock()
            .await
            .push((header, Request::decode(data.as_slice()).unwrap()));
        let ok = Response {
            status: None,
            payload: vec![],
        };
        frame::write_frame(&mut stream, header.stream_id, KIND_RESPONSE, 0, &ok.encode_to_vec())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn client_frames_follow_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(recording_server(listener, Arc::clone(&frames)));
    let client = EventsClient::new(Client::connect(&path).await.unwrap());
    let options = CallOptions::with_metadata("a", "1").timeout(Duration::from_secs(2));
    for topic in ["/one", "/two", "/three"] {
        client.forward(&options, &envelope(topic)).await.unwrap();
    }
    drop(client);
    server.await.unwrap();
    let frames = frames.lock().await;
    let ids: Vec<u32> = frames.iter().map(|(h, _)| h.stream_id).collect();
    assert_eq!(ids, [1, 3, 5], "client stream ids are odd and increasing");
    for (header, request) in frames.iter() {
        assert_eq!(header.kind, KIND_REQUEST);
        assert_eq!(header.flags, 0);
        assert_eq!(request.service, "containerd.services.events.ttrpc.v1.Events");
        assert_eq!(request.method, "Forward");
        assert_eq!(request.timeout_nano, 2_000_000_000);
        assert_eq!(request.metadata[0].key, "a");
        assert_eq!(request.metadata[0].value, "1");
    }
    let first = ForwardRequest::decode(frames[0].1.payload.as_slice()).unwrap();
    assert_eq!(first.envelope.unwrap().topic, "/one");
}

#[tokio::test]
async fn pending_calls_fail_when_the_connection_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drop.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        // Read the request, then hang up without answering.
        let _ = frame::read_frame(&mut stream).await;
    });
    let client = Client::connect(&path).await.unwrap();
    let events = EventsClient::new(client.clone());
    let err = events
        .forward(&CallOptions::default(), &envelope("/x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    server.await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), client.closed())
        .await
        .expect("closed() resolves after the peer left");
    assert!(client.is_closed());
    let err = events
        .forward(&CallOptions::default(), &envelope("/y"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn abstract_sockets_connect() {
    let name = format!("berth-ttrpc-test-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes())
            .unwrap();
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let listener = UnixListener::from_std(std_listener).unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(recording_server(listener, Arc::clone(&frames)));
    let client = EventsClient::new(Client::connect_abstract(name.as_bytes()).await.unwrap());
    client
        .forward(&CallOptions::default(), &envelope("/abstract"))
        .await
        .unwrap();
    drop(client);
    server.await.unwrap();
    assert_eq!(frames.lock().await.len(), 1);
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let harness = Harness::start().await;
    let client = EventsClient::new(harness.client().await);
    let slow = tokio::spawn(async move { client.forward(&CallOptions::default(), &envelope("/slow")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let recorder = Arc::clone(&harness.recorder);
    harness.stop().await;
    slow.await.unwrap().unwrap();
    assert_eq!(recorder.seen.lock().await.len(), 1);
}
