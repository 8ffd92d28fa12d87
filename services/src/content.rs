//! Content: blobs and ingests of the request's namespace (`ctr content`,
//! and every import and pull).

use std::pin::Pin;
use std::sync::Arc;

use berth_api::containerd::events::ContentDelete;
use berth_api::containerd::services::content::v1::content_server::{Content, ContentServer};
use berth_api::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest, ListContentResponse,
    ListStatusesRequest, ListStatusesResponse, ReadContentRequest, ReadContentResponse, Status as IngestStatusMessage,
    StatusRequest, StatusResponse, UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use berth_core::content::namespaced::{NamespacedContent, RefStatus};
use berth_core::content::{ContentStore, Digest};
use berth_core::events::Exchange;
use berth_core::filters::Filter;
use berth_core::gc::GarbageCollector;
use berth_core::labels::LabelUpdate;
use berth_core::metadata::MetadataStore;
use berth_core::plugin::{Registration, types};
use berth_core::{Error, timestamps};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::lease_header::lease;
use crate::namespace_header::{namespace_required, required};
use crate::publish;

/// Blob infos per List message, as containerd batches them.
const LIST_BATCH: usize = 100;

/// Bytes per Read message.
const READ_CHUNK: usize = 1 << 20;

/// Answers the Content service.
#[derive(Debug)]
pub struct ContentService {
    content: NamespacedContent,
    events: Arc<Exchange>,
    gc: GarbageCollector,
}

impl ContentService {
    /// A service over `content`, publishing on `events`, collecting with `gc`.
    pub fn new(content: NamespacedContent, events: Arc<Exchange>, gc: GarbageCollector) -> Self {
        Self { content, events, gc }
    }
}

fn status_message(status: RefStatus) -> IngestStatusMessage {
    IngestStatusMessage {
        started_at: Some(timestamps::from_system_time(status.status.started_at)),
        updated_at: Some(timestamps::from_system_time(status.status.updated_at)),
        r#ref: status.reference,
        offset: status.status.offset,
        total: status.status.total,
        expected: status.expected.unwrap_or_default(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListContentResponse, Status>> + Send>>;
type ReadStream = ReceiverStream<Result<ReadContentResponse, Status>>;
type WriteStream = ReceiverStream<Result<WriteContentResponse, Status>>;

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let namespace = required(&request)?;
        let digest = Digest::parse(&request.into_inner().digest)?;
        let info = self.content.info(&namespace, &digest).await?;
        Ok(Response::new(InfoResponse { info: Some(info) }))
    }

    async fn update(&self, request: Request<UpdateRequest>) -> Result<Response<UpdateResponse>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let info = request
            .info
            .ok_or_else(|| Error::invalid_argument("content info must be set"))?;
        let digest = Digest::parse(&info.digest)?;
        let paths = request.update_mask.map(|m| m.paths).unwrap_or_default();
        let update = LabelUpdate::from_mask(&format!("content {digest}"), info.labels, &paths)?;
        let info = self.content.update_labels(&namespace, &digest, update).await?;
        Ok(Response::new(UpdateResponse { info: Some(info) }))
    }

    type ListStream = ListStream;

    async fn list(&self, request: Request<ListContentRequest>) -> Result<Response<ListStream>, Status> {
        let namespace = required(&request)?;
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let infos = self.content.list(&namespace, filter).await?;
        let batches: Vec<Result<ListContentResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|batch: &[Info]| Ok(ListContentResponse { info: batch.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, request: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let digest = Digest::parse(&request.into_inner().digest)?;
        self.content.delete(&namespace, &digest, lease).await?;
        publish(
            &self.events,
            &namespace,
            "/content/delete",
            &ContentDelete {
                digest: digest.to_string(),
            },
        );
        self.gc.schedule();
        Ok(Response::new(()))
    }

    type ReadStream = ReadStream;

    async fn read(&self, request: Request<ReadContentRequest>) -> Result<Response<ReadStream>, Status> {
        let namespace = required(&request)?;
        let request = request.into_inner();
        let digest = Digest::parse(&request.digest)?;
        let (file, size) = self.content.open(&namespace, &digest).await?;
        let offset = request.offset.max(0);
        if offset > size {
            return Err(Status::out_of_range(format!(
                "content {digest}: read past object length {size} bytes"
            )));
        }
        let length = if request.size <= 0 || offset.saturating_add(request.size) > size {
            size - offset
        } else {
            request.size
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || read_chunks(file, digest, offset, length, &tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let namespace = required(&request)?;
        let reference = request.into_inner().r#ref;
        let status = self.content.status(&namespace, &reference).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_message(status)),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let namespace = required(&request)?;
        let filter = Filter::parse_all(&request.into_inner().filters)?;
        let statuses = self.content.list_statuses(&namespace, filter).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: statuses.into_iter().map(status_message).collect(),
        }))
    }

    type WriteStream = WriteStream;

    async fn write(&self, request: Request<Streaming<WriteContentRequest>>) -> Result<Response<WriteStream>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let content = self.content.clone();
        tokio::spawn(async move {
            if let Err(status) = write_session(content, namespace, lease, inbound, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let namespace = required(&request)?;
        let lease = lease(&request)?;
        let reference = request.into_inner().r#ref;
        self.content.abort(&namespace, &reference, lease).await?;
        Ok(Response::new(()))
    }
}

/// Streams `length` bytes of a blob from `offset`, 1 MiB per message.
fn read_chunks(
    mut file: std::fs::File,
    digest: Digest,
    offset: i64,
    length: i64,
    tx: &mpsc::Sender<Result<ReadContentResponse, Status>>,
) {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let fail = |e: std::io::Error| Status::from(Error::io(format!("reading content {digest}"), &e));
    if let Err(e) = file.seek(SeekFrom::Start(u64::try_from(offset).unwrap_or(0))) {
        let _ = tx.blocking_send(Err(fail(e)));
        return;
    }
    let (mut position, end) = (offset, offset + length);
    while position < end {
        let want = usize::try_from(end - position).unwrap_or(READ_CHUNK).min(READ_CHUNK);
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match file.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(fail(e)));
                    return;
                }
            }
        }
        if filled == 0 {
            let _ = tx.blocking_send(Err(Status::data_loss(format!(
                "content {digest}: blob is shorter than its recorded size"
            ))));
            return;
        }
        data.truncate(filled);
        let message = ReadContentResponse { offset: position, data };
        position += i64::try_from(filled).unwrap_or(i64::MAX);
        if tx.blocking_send(Ok(message)).is_err() {
            return; // the client went away
        }
    }
}

fn optional_digest(text: &str) -> Result<Option<Digest>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        Ok(Some(Digest::parse(text)?))
    }
}

/// containerd's lock-step write protocol: exactly one response per request.
/// STAT reports where the ingest stands; WRITE appends at the current offset
/// (offset 0 starts over; any other wrong offset is OutOfRange); COMMIT
/// verifies and stores the blob and ends the stream. An expected digest the
/// namespace already holds ends the stream with AlreadyExists.
async fn write_session(
    content: NamespacedContent,
    namespace: String,
    lease: Option<String>,
    mut inbound: Streaming<WriteContentRequest>,
    tx: &mpsc::Sender<Result<WriteContentResponse, Status>>,
) -> Result<(), Status> {
    let Some(mut request) = inbound.message().await? else {
        return Ok(());
    };
    if request.r#ref.is_empty() {
        return Err(Status::invalid_argument("first message must have a reference"));
    }
    let reference = request.r#ref.clone();
    let mut total = request.total;
    let mut expected = optional_digest(&request.expected)?;
    let mut writer = content
        .writer(&namespace, &reference, total, expected.clone(), lease.clone())
        .await?;
    loop {
        let status = writer.status()?;
        let mut reply = WriteContentResponse {
            action: request.action,
            offset: status.offset,
            ..Default::default()
        };
        if let Some(digest) = optional_digest(&request.expected)? {
            if content.info(&namespace, &digest).await.is_ok() {
                drop(writer);
                let _ = content.abort(&namespace, &reference, lease).await;
                return Err(Error::already_exists(format!("content {digest}")).into());
            }
            expected = Some(digest);
        }
        if request.total > 0 {
            total = request.total;
            writer.set_total(total);
        }
        let action = WriteAction::try_from(request.action)
            .map_err(|_| Status::invalid_argument(format!("unknown write action {}", request.action)))?;
        match action {
            WriteAction::Stat => {
                reply.digest = writer.digest()?.to_string();
                reply.started_at = Some(timestamps::from_system_time(status.started_at));
                reply.updated_at = Some(timestamps::from_system_time(status.updated_at));
                reply.total = total;
            }
            WriteAction::Write | WriteAction::Commit => {
                if request.offset < 0 {
                    return Err(Status::invalid_argument(format!(
                        "ref {reference:?}: negative write offset {}",
                        request.offset
                    )));
                }
                if request.offset > 0 && request.offset != status.offset {
                    return Err(Status::out_of_range(format!(
                        "ref {reference:?}: write @{} must occur at current offset {}",
                        request.offset, status.offset
                    )));
                }
                if request.offset == 0 && status.offset > 0 {
                    writer.truncate().await?;
                    reply.offset = 0;
                }
                if !request.data.is_empty() {
                    let written = i64::try_from(request.data.len()).unwrap_or(i64::MAX);
                    writer.write(std::mem::take(&mut request.data)).await?;
                    reply.offset += written;
                }
                if action == WriteAction::Commit {
                    let digest = writer.commit(total, expected.clone(), request.labels).await?;
                    reply.digest = digest.to_string();
                    let _ = tx.send(Ok(reply)).await;
                    return Ok(());
                }
                reply.digest = writer.digest()?.to_string();
            }
        }
        if tx.send(Ok(reply)).await.is_err() {
            return Ok(()); // the client went away; the ingest stays to resume
        }
        match inbound.message().await? {
            Some(next) => request = next,
            None => return Ok(()),
        }
    }
}

/// `io.containerd.grpc.v1.content`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GRPC,
        id: "content",
        requires: &[types::METADATA, types::CONTENT, types::GC, types::EVENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let store: Arc<ContentStore> = ctx.get(types::CONTENT)?;
                let gc: Arc<GarbageCollector> = ctx.get(types::GC)?;
                let events: Arc<Exchange> = ctx.get(types::EVENT)?;
                let content = NamespacedContent::new(store, (*meta).clone());
                routed_service!(
                    ctx,
                    ContentServer::new(ContentService::new(content, events, (*gc).clone())),
                    namespace_required
                )
            })
        }),
    }
}
