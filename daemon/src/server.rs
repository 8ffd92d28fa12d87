//! Running berthd: lock the root, initialise plugins, serve gRPC on the
//! Unix socket and ttrpc for shims, and shut down cleanly on SIGTERM/SIGINT.
//!
//! Shutdown: the signal fires the daemon-wide shutdown, which ends event
//! subscriptions and health watches; the servers stop accepting and give
//! calls in flight up to `shutdown_timeout` seconds; then both socket files
//! are removed and the root lock is released. A second signal skips the wait.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_api::containerd::services::events::ttrpc::v1::events_ttrpc::EventsServer as TtrpcEventsServer;
use berth_core::events::{Exchange, TtrpcForwarder};
use berth_core::plugin::{DaemonContext, GrpcService, PluginSet, types};
use berth_core::shutdown::{self, ShutdownSignal};
use berth_core::{Error, Result};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::Connected;

use crate::any_authority::AnyAuthority;
use crate::config::Config;
use crate::connection_limit::ConnectionLimit;
use crate::deadline::Deadline;
use crate::grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};
use crate::instance_lock::{claim_socket_path, lock_root};
use crate::plugins;
use crate::request_span::RequestSpanLayer;
use crate::tcp_tls::ReloadableTls;

/// Mode of the API sockets: owner and group may connect.
const SOCKET_MODE: u32 = 0o660;

/// Mode of the root and state directories, as containerd makes them.
const DIR_MODE: u32 = 0o711;

/// Runs the daemon until it is told to stop.
pub async fn run(config: Config) -> Result<()> {
    // Before any socket exists: a client that sees the socket may stop
    // the daemon at once, and that stop must be the graceful one.
    let stop_signals = StopSignals::install()?;
    create_dir(&config.root)?;
    create_dir(&config.state)?;
    let _lock = lock_root(&config.root)?;
    let grpc_address = config.grpc.address.clone();
    let ttrpc_address = config.ttrpc_address();
    claim_socket_path(&grpc_address)?;
    claim_socket_path(&ttrpc_address)?;
    // TCP before anything is made, so a bad certificate or a taken port
    // stops the start with nothing to undo.
    let tcp = prepare_tcp(&config).await?;
    let metrics_listener = match config.metrics.address.as_str() {
        "" => None,
        address => Some(crate::tcp_tls::bind("metrics.address", address).await?),
    };
    let grpc_metrics = metrics_listener
        .as_ref()
        .map(|_| Arc::new(GrpcMetrics::new(config.metrics.grpc_histogram)));

    let (trigger, shutdown) = shutdown::channel();
    let context = DaemonContext {
        root: config.root.clone(),
        state: config.state.clone(),
        grpc_address: grpc_address.clone(),
        ttrpc_address: ttrpc_address.clone(),
        max_recv_message_size: config.grpc.max_recv_message_size,
        max_send_message_size: config.grpc.max_send_message_size,
        shutdown: shutdown.clone(),
        registry: config.registry.to_core(),
    };
    let plugins = plugins::registry()
        .initialise(context, &config.plugins, &config.disabled_plugins)
        .await?;
    report_plugins(&plugins);

    // The ttrpc socket first: once the gRPC socket answers, both exist.
    let ttrpc_listener = bind(&ttrpc_address, &config)?;
    let grpc_listener = match bind(&grpc_address, &config) {
        Ok(listener) => listener,
        Err(e) => {
            let _ = std::fs::remove_file(&ttrpc_address);
            return Err(e);
        }
    };

    let grace = Duration::from_secs(config.shutdown_timeout);
    let limit = ConnectionLimit::new(config.grpc.max_connections);
    let unix_limit = limit.clone();
    let unix_incoming = UnixListenerStream::new(grpc_listener).filter_map(move |accepted| match accepted {
        Ok(stream) => unix_limit.admit(stream).map(|counted| Ok(AnyAuthority::new(counted))),
        Err(e) => Some(Err(e)),
    });
    let counting = GrpcMetricsLayer::new(grpc_metrics.clone());
    let grpc = tokio::spawn(serve_grpc(
        server_builder(&config),
        counting.clone(),
        routes(&plugins),
        unix_incoming,
        shutdown.clone(),
    ));
    let tcp_server = tcp.map(|(listener, tls)| {
        if let Some(tls) = &tls {
            tokio::spawn(reload_on_sighup(Arc::clone(tls), shutdown.clone()));
        }
        let incoming = crate::tcp_tls::incoming(listener, tls, limit, shutdown.clone());
        tokio::spawn(serve_grpc(
            server_builder(&config),
            counting,
            routes(&plugins),
            incoming,
            shutdown.clone(),
        ))
    });
    if let (Some(listener), Some(grpc)) = (metrics_listener, grpc_metrics) {
        let sources = crate::metrics_server::Sources {
            grpc,
            runtime: plugins.get(types::RUNTIME_V2).ok(),
        };
        tracing::info!(address = %config.metrics.address, path = crate::metrics_server::PATH, "serving metrics");
        tokio::spawn(crate::metrics_server::serve(listener, sources, shutdown.clone()));
    }
    let ttrpc = tokio::spawn(serve_ttrpc(&plugins, ttrpc_listener, shutdown.clone(), grace)?);
    tracing::info!(
        address = %grpc_address.display(),
        ttrpc = %ttrpc_address.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        "berthd is serving"
    );

    let outcome = stop_signals.wait(&shutdown).await;
    trigger.fire();
    tracing::info!("shutting down");
    let servers = async {
        if let Some(tcp_server) = tcp_server
            && let Ok(Err(e)) = tcp_server.await
        {
            tracing::warn!(error = %e, "gRPC server on TCP ended with an error");
        }
        let grpc_result = grpc.await;
        let ttrpc_result = ttrpc.await;
        (grpc_result, ttrpc_result)
    };
    tokio::select! {
        (grpc_result, ttrpc_result) = servers => {
            if let Ok(Err(e)) = grpc_result {
                tracing::warn!(error = %e, "gRPC server ended with an error");
            }
            if let Ok(Err(e)) = ttrpc_result {
                tracing::warn!(error = %e, "ttrpc server ended with an error");
            }
        }
        () = tokio::time::sleep(grace) => tracing::warn!(seconds = grace.as_secs(), "calls still in flight after the shutdown timeout; stopping anyway"),
        () = second_signal() => tracing::warn!("second signal: stopping at once"),
    }
    close_snapshotters(&plugins);
    for path in [&grpc_address, &ttrpc_address] {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
        }
    }
    tracing::info!("berthd stopped");
    outcome
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), &e))
}

/// Closes every snapshotter once requests have drained, so nothing changes
/// a snapshot after the daemon said it stopped.
fn close_snapshotters(plugins: &PluginSet) {
    for entry in plugins.of_type(types::SNAPSHOTTER) {
        if let Ok(plugin) = entry.get::<berth_core::snapshots::SnapshotterPlugin>()
            && let Err(e) = plugin.0.close()
        {
            tracing::warn!(snapshotter = entry.id, error = %e, "closing the snapshotter failed");
        }
    }
}

fn report_plugins(plugins: &PluginSet) {
    for entry in plugins.entries() {
        match &entry.instance {
            Ok(_) => {
                tracing::debug!(plugin = %format!("{}.{}", entry.plugin_type, entry.id), "plugin ready")
            }
            Err(e) => {
                tracing::warn!(plugin = %format!("{}.{}", entry.plugin_type, entry.id), error = %e, "plugin not available")
            }
        }
    }
}

/// Binds a Unix socket with the API's mode and owner.
fn bind(path: &Path, config: &Config) -> Result<UnixListener> {
    // Bound under a temporary name and renamed into place once its mode and
    // owner are set, so no client can ever reach a socket with looser rights.
    // A short name in the same directory: the socket path limit is tight.
    let staging = path.with_file_name(format!(".{}.s", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener =
        UnixListener::bind(&staging).map_err(|e| Error::io(format!("listening on {}", path.display()), &e))?;
    let prepared = prepare_socket(&staging, path, config).and_then(|()| {
        std::fs::rename(&staging, path).map_err(|e| Error::io(format!("putting {} in place", path.display()), &e))
    });
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(listener)
}

/// Gives a freshly bound socket its mode and owner.
fn prepare_socket(staging: &Path, path: &Path, config: &Config) -> Result<()> {
    std::fs::set_permissions(staging, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| Error::io(format!("setting the mode of {}", path.display()), &e))?;
    let (uid, gid) = (config.grpc.uid, config.grpc.gid);
    if uid != nix::unistd::geteuid().as_raw() || gid != nix::unistd::getegid().as_raw() {
        nix::unistd::chown(staging, Some(uid.into()), Some(gid.into())).map_err(|e| {
            Error::io(
                format!("giving {} to {uid}:{gid}", path.display()),
                &std::io::Error::from(e),
            )
        })?;
    }
    Ok(())
}

/// Routes to every gRPC plugin that initialised.
fn routes(plugins: &PluginSet) -> Routes {
    let mut routes = RoutesBuilder::default();
    for entry in plugins.of_type(types::GRPC) {
        if let Ok(service) = entry.get::<GrpcService>() {
            service.add_to(&mut routes);
        }
    }
    routes.routes()
}

/// Serves gRPC on `incoming` connections until shutdown, then lets calls
/// in flight finish.
async fn serve_grpc<I, IO, IE>(
    builder: tonic::transport::Server,
    counting: GrpcMetricsLayer,
    routes: Routes,
    incoming: I,
    shutdown: ShutdownSignal,
) -> Result<()>
where
    I: tokio_stream::Stream<Item = std::result::Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    builder
        .layer(
            tower::ServiceBuilder::new()
                .layer(RequestSpanLayer)
                .layer(counting)
                .layer(tower::layer::layer_fn(Deadline::new)),
        )
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move { shutdown.fired().await })
        .await
        .map_err(|e| Error::internal(format!("gRPC server: {e}")))
}

/// The HTTP/2 server with `[grpc]`'s per-connection limits.
fn server_builder(config: &Config) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.grpc.max_concurrent_streams))
        .http2_keepalive_interval(Some(Duration::from_secs(config.grpc.keepalive_interval)))
        .http2_keepalive_timeout(Some(Duration::from_secs(config.grpc.keepalive_timeout)))
}

/// The TCP listener and its TLS, when `[grpc] tcp_address` is set.
async fn prepare_tcp(config: &Config) -> Result<Option<(tokio::net::TcpListener, Option<Arc<ReloadableTls>>)>> {
    if config.grpc.tcp_address.is_empty() {
        return Ok(None);
    }
    let tls = match config.grpc.tls_files() {
        Some(files) => Some(Arc::new(ReloadableTls::load(files)?)),
        None => None,
    };
    let listener = crate::tcp_tls::bind("grpc.tcp_address", &config.grpc.tcp_address).await?;
    let address = &config.grpc.tcp_address;
    match &tls {
        Some(tls) if tls.mutual() => tracing::info!(%address, "serving TCP with mutual TLS"),
        Some(_) => tracing::warn!(
            %address,
            "serving TCP with TLS but no client CA (grpc.tcp_tls_ca): any client that reaches the port may use the API"
        ),
        None => tracing::warn!(
            %address,
            "serving plain TCP (grpc.tcp_insecure = true): anyone who reaches the port controls this host"
        ),
    }
    Ok(Some((listener, tls)))
}

/// Loads the TCP listener's certificates again on each SIGHUP.
async fn reload_on_sighup(tls: Arc<ReloadableTls>, shutdown: ShutdownSignal) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler: certificates will not reload");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: TLS certificates not reloaded; the previous ones stay"),
            },
            () = shutdown.fired() => return,
        }
    }
}

/// Builds the ttrpc server shims forward events to.
fn serve_ttrpc(
    plugins: &Arc<PluginSet>,
    listener: UnixListener,
    shutdown: ShutdownSignal,
    grace: Duration,
) -> Result<impl Future<Output = Result<()>> + use<>> {
    let exchange: Arc<Exchange> = plugins.get(types::EVENT)?;
    let server = berth_api::ttrpc::Server::new().register(TtrpcEventsServer(Arc::new(TtrpcForwarder::new(exchange))));
    Ok(async move {
        server
            .serve(listener, async move { shutdown.fired().await }, grace)
            .await
            .map_err(|e| Error::io("ttrpc server", &e))
    })
}

/// SIGTERM and SIGINT, caught from the start of `run` so that neither
/// kills the daemon before its graceful shutdown is ready to run.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        let term = signal(SignalKind::terminate()).map_err(|e| Error::io("installing the SIGTERM handler", &e))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| Error::io("installing the SIGINT handler", &e))?;
        Ok(Self { term, int })
    }

    /// Waits for SIGTERM or SIGINT (or an internal shutdown).
    async fn wait(mut self, shutdown: &ShutdownSignal) -> Result<()> {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            () = shutdown.fired() => {}
        }
        Ok(())
    }
}

async fn second_signal() {
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
