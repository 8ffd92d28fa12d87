//! The `containerd-namespace` request header, read once per request.
//!
//! Every service is wrapped in one of two interceptors. Both parse the header
//! and leave the result in the request's extensions; [`namespace_required`]
//! also turns away requests without a valid namespace before any handler
//! runs, which is what namespaced services (content, images, containers, ...)
//! want. Services that only need a namespace for some calls (Events.Publish)
//! use [`namespace_optional`] and ask with [`required`].

use berth_core::Error;
use berth_core::metadata::namespaces::validate_name;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The gRPC metadata key clients put the namespace in.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// What a request said about its namespace.
#[derive(Clone, Debug)]
pub enum RequestNamespace {
    /// No header, or an empty one.
    Missing,
    /// A valid namespace name.
    Valid(String),
    /// A header that is not a valid namespace name.
    Invalid(Error),
}

/// Reads the header; the first value wins, as with containerd.
pub fn read_namespace(metadata: &MetadataMap) -> RequestNamespace {
    let Some(value) = metadata.get(NAMESPACE_HEADER) else {
        return RequestNamespace::Missing;
    };
    let Ok(name) = value.to_str() else {
        return RequestNamespace::Invalid(Error::invalid_argument(format!(
            "namespace header {:?} is not printable text",
            String::from_utf8_lossy(value.as_bytes())
        )));
    };
    if name.is_empty() {
        return RequestNamespace::Missing;
    }
    match validate_name(name) {
        Ok(()) => RequestNamespace::Valid(name.to_string()),
        Err(e) => RequestNamespace::Invalid(e),
    }
}

fn missing() -> Status {
    Error::failed_precondition("namespace is required").into()
}

/// Interceptor for services that are namespaced throughout: a request
/// without a valid namespace never reaches them.
pub fn namespace_required(mut request: Request<()>) -> Result<Request<()>, Status> {
    let namespace = read_namespace(request.metadata());
    match &namespace {
        RequestNamespace::Missing => return Err(missing()),
        RequestNamespace::Invalid(e) => return Err(e.clone().into()),
        RequestNamespace::Valid(_) => {}
    }
    request.extensions_mut().insert(namespace);
    Ok(request)
}

/// Interceptor for services that are not namespaced, or only partly.
pub fn namespace_optional(mut request: Request<()>) -> Result<Request<()>, Status> {
    let namespace = read_namespace(request.metadata());
    request.extensions_mut().insert(namespace);
    Ok(request)
}

/// The request's namespace, or the error a namespaced call answers with.
pub fn required<T>(request: &Request<T>) -> Result<String, Status> {
    match request.extensions().get::<RequestNamespace>() {
        Some(RequestNamespace::Valid(name)) => Ok(name.clone()),
        Some(RequestNamespace::Invalid(e)) => Err(e.clone().into()),
        Some(RequestNamespace::Missing) | None => Err(missing()),
    }
}

/// The request's namespace when it gave a valid one.
pub fn optional<T>(request: &Request<T>) -> Option<String> {
    match request.extensions().get::<RequestNamespace>() {
        Some(RequestNamespace::Valid(name)) => Some(name.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn with_header(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(NAMESPACE_HEADER, value.parse().unwrap());
        request
    }

    #[test]
    fn required_rejects_a_missing_or_empty_header() {
        for request in [Request::new(()), with_header("")] {
            let status = namespace_required(request).unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert_eq!(status.message(), "namespace is required: failed precondition");
        }
    }

    #[test]
    fn required_rejects_an_invalid_name_naming_it() {
        let status = namespace_required(with_header("Not-Valid-")).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("\"Not-Valid-\""), "{}", status.message());
    }

    #[test]
    fn required_passes_the_namespace_to_the_handler() {
        let request = namespace_required(with_header("k8s.io")).unwrap();
        assert_eq!(required(&request).unwrap(), "k8s.io");
        assert_eq!(optional(&request).as_deref(), Some("k8s.io"));
    }

    #[test]
    fn the_first_value_wins() {
        let mut request = with_header("first");
        request
            .metadata_mut()
            .append(NAMESPACE_HEADER, "second".parse().unwrap());
        let request = namespace_required(request).unwrap();
        assert_eq!(required(&request).unwrap(), "first");
    }

    #[test]
    fn optional_lets_everything_through_and_remembers_why() {
        let request = namespace_optional(Request::new(())).unwrap();
        assert_eq!(required(&request).unwrap_err().code(), Code::FailedPrecondition);
        assert!(optional(&request).is_none());
        let request = namespace_optional(with_header("a b")).unwrap();
        assert_eq!(required(&request).unwrap_err().code(), Code::InvalidArgument);
        let request = namespace_optional(with_header("default")).unwrap();
        assert_eq!(optional(&request).as_deref(), Some("default"));
    }

    #[test]
    fn a_handler_without_an_interceptor_sees_no_namespace() {
        let request = Request::new(());
        assert_eq!(required(&request).unwrap_err().code(), Code::FailedPrecondition);
    }
}
